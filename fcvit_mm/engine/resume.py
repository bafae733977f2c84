# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""``--resume`` that continues from a checkpoint that works, or says why
none does.

:class:`SafeResumeHook` picks the checkpoint before mmengine loads it: with
``--resume PATH`` that file must load and fit the model (else the run fails
at once, naming it); with a bare ``--resume`` it is the newest checkpoint of
the work dir that loads and fits, naming each newer one skipped
(:func:`find_resumable_checkpoint`). A work dir whose checkpoints all fail
is an error naming each; one without checkpoints starts from scratch. The
resumed run takes the checkpoint's seed before its data loader draws
anything (:func:`follow_checkpoint_seed`), so ``seed=None`` resumes exactly.
The checkpoint is read once: the copy read for the check is the one mmengine
resumes from (:func:`~fcvit_mm.models.checkpoint.safe_url`).
"""
import os
import os.path as osp
import re
from typing import List, Optional, Tuple

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import find_latest_checkpoint

from fcvit_mm.internals import get_private, set_private
from fcvit_mm.models import FCViT
from fcvit_mm.models.checkpoint import (CheckpointError,
                                        check_backbone_fits,
                                        extract_state_dict, safe_load,
                                        safe_url)

_NUMBER = re.compile(r'(\d+)')


def _checkpoint_order(path: str) -> Tuple[float, float]:
    """Newest first: by the number in the name (epoch_N / iter_N), then by
    modification time."""
    numbers = _NUMBER.findall(osp.basename(path))
    mtime = osp.getmtime(path) if osp.exists(path) else 0.
    return (float(numbers[-1]) if numbers else -1.0, mtime)


def checkpoint_candidates(work_dir: str) -> List[str]:
    """Checkpoints of a work dir, the one ``last_checkpoint`` names
    (mmengine's ``find_latest_checkpoint``) first, then the others from
    newest to oldest."""
    found = [
        osp.join(work_dir, f) for f in os.listdir(work_dir)
        if f.endswith('.pth') and not f.startswith('.')
    ] if osp.isdir(work_dir) else []
    found.sort(key=_checkpoint_order, reverse=True)
    named = find_latest_checkpoint(work_dir) if osp.isfile(
        osp.join(work_dir, 'last_checkpoint')) else None
    if named:
        if not osp.isabs(named):
            named = osp.join(work_dir, osp.basename(named))
        found = [named] + [p for p in found
                           if osp.abspath(p) != osp.abspath(named)]
    return found


def check_resumable(path: str,
                    model: Optional[nn.Module] = None) -> Tuple[dict, dict]:
    """Load ``path`` as a training checkpoint of ``model``.

    Returns:
        (checkpoint, meta): the loaded checkpoint and its ``meta``.

    Raises:
        CheckpointError / FileNotFoundError: naming the file and why.
    """
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or 'state_dict' not in ckpt:
        raise CheckpointError(f'{path!r} holds no "state_dict"')
    for name, module in (model.named_modules() if model is not None else ()):
        if not isinstance(module, FCViT):
            continue
        weights = extract_state_dict(ckpt, path)
        try:
            check_backbone_fits(module, weights, f'{name}.' if name else None,
                                name)
        except CheckpointError as e:
            raise CheckpointError(f'{path!r}: {e}') from None
    return ckpt, dict(ckpt.get('meta') or {})


def find_resumable_checkpoint(
        work_dir: str,
        logger=None,
        model: Optional[nn.Module] = None
) -> Tuple[Optional[str], dict, Optional[dict]]:
    """The newest checkpoint of ``work_dir`` that loads (and fits
    ``model``), with a warning naming each newer one skipped.

    Returns:
        (path, meta, checkpoint): ``(None, {}, None)`` if the work dir holds
        no checkpoint.

    Raises:
        CheckpointError: the work dir holds checkpoints but none loads; the
            message names each file and why.
    """
    failures = []
    for path in checkpoint_candidates(work_dir):
        try:
            ckpt, meta = check_resumable(path, model)
            return path, meta, ckpt
        except (CheckpointError, FileNotFoundError) as e:
            failures.append(f'  {path}: {e}')
            if logger is not None:
                logger.warning(f'cannot resume from {path}: {e}; trying the '
                               f'next older checkpoint')
    if failures:
        raise CheckpointError(
            f'--resume: none of the checkpoints in {work_dir} can be resumed '
            f'from:\n' + '\n'.join(failures) + '\nMove them away to start '
            'from scratch, or use another --work-dir.')
    return None, {}, None


@HOOKS.register_module()
class SafeResumeHook(Hook):
    """Choose the checkpoint that ``--resume`` continues from (see the
    module doc); does nothing in a run that does not resume. It runs
    before the other hooks' ``before_run``, so that they see the data loader
    it may rebuild."""

    priority = 'HIGHEST'

    def before_run(self, runner) -> None:
        if not get_private(runner, '_resume'):
            return
        model = runner.model
        if is_model_wrapper(model):  # DDP: the keys are the model's
            model = model.module
        path = get_private(runner, '_load_from')
        if path:  # --resume PATH: fail at once if unusable
            ckpt, meta = check_resumable(path, model)
        else:
            path, meta, ckpt = find_resumable_checkpoint(
                runner.work_dir, runner.logger, model)
            if path is None:
                runner.logger.info(f'--resume: no checkpoint in '
                                   f'{runner.work_dir}; starting from '
                                   f'scratch')
                set_private(runner, '_resume', False)
                return
            runner.logger.info(f'--resume: resuming from {path}')
        # mmengine resumes from the checkpoint read here (no second read)
        set_private(runner, '_load_from', safe_url(path, ckpt))
        follow_checkpoint_seed(runner, meta.get('seed'))


def follow_checkpoint_seed(runner, seed) -> None:
    """Take the resumed checkpoint's seed now and rebuild the training data
    loader with it (mmengine re-seeds only after the loader is built, so a
    run with ``seed=None`` would otherwise draw other samples and augment
    them differently after resuming)."""
    randomness = get_private(runner, '_randomness_cfg')
    if seed is None or randomness.get('seed') == seed:
        return
    randomness.update(seed=seed)
    runner.set_randomness(**randomness)
    loader_cfg = get_private(runner, '_train_dataloader')
    if not isinstance(loader_cfg, dict):
        return
    loop = runner.train_loop
    loop.dataloader = runner.build_dataloader(
        loader_cfg, seed=runner.seed,
        diff_rank_seed=randomness.get('diff_rank_seed', False))
    iterator = getattr(loop, 'dataloader_iterator', None)
    if iterator is not None:  # iteration-based loops: a fresh one
        loop.dataloader_iterator = type(iterator)(loop.dataloader)
