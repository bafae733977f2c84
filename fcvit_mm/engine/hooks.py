# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Hooks that keep long training runs honest.

* :class:`RandomStateHook` stores the random generators' states in every
  checkpoint and restores them on resume, so that an interrupted and resumed
  run ends with the same weights as an uninterrupted one (data order and
  worker seeds are already deterministic in mmengine given the seed).
* :class:`FiniteLossHook` stops training at the first non-finite loss, naming
  the iteration and the likely causes it can see, instead of running on for
  hours of NaN.
* :class:`SafeCheckpointHook` is mmengine's ``CheckpointHook`` that never
  leaves fewer loadable checkpoints than before a save: atomic writes, old
  checkpoints removed only once the new one is in place, leftovers of a
  killed save removed at the next start, and ``--resume`` that skips
  checkpoints that do not load (naming them) and fails when none does.

The configs' ``_base_/default_runtime.py`` name all three (``custom_hooks``
and ``default_hooks.checkpoint``), so they are active whichever
``train.py`` runs the config (ours, mmdet's, mmseg's, mmpretrain's, ``mim
train``).
"""
import math
import os.path as osp
import random
from contextlib import contextmanager

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from fcvit_mm.utils.checkpoint import (ATOMIC_BACKEND, check_resumable,
                                       find_resumable_checkpoint,
                                       remove_temporary_files)
from .data_hooks import unwrap_model


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the python, numpy and torch generator states in each checkpoint
    and restore them when training resumes.

    The states are applied in ``before_train``, after the runner has
    re-seeded itself from the checkpoint's seed. Validation leaves the
    generators as it found them (it runs after a checkpoint is written, and
    must not make the training that follows differ from a resumed one).
    Data loading is exact on resume when it runs in worker processes
    (``num_workers >= 1``): their seeds are fixed by mmengine, and the
    iteration-based loop replays the consumed batches.
    """

    priority = 'VERY_LOW'
    key = 'fcvit_mm_random_state'

    def __init__(self):
        self._pending = None
        self._before_val = None

    @staticmethod
    def get_state() -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = dict(
            python=random.getstate(),
            numpy=dict(kind=kind,
                       keys=torch.from_numpy(keys.astype(np.int64)),
                       pos=int(pos), has_gauss=int(has_gauss),
                       gauss=float(gauss)),
            torch=torch.get_rng_state())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def set_state(state: dict) -> None:
        """Apply ``state``; its tensors may come back on the GPU (mmengine
        maps a resumed checkpoint to the training device): generator states
        are CPU tensors, so they are moved there first."""
        random.setstate(_as_python_state(state['python']))
        n = state['numpy']
        np.random.set_state(
            (n['kind'], n['keys'].cpu().numpy().astype(np.uint32), n['pos'],
             n['has_gauss'], n['gauss']))
        torch.set_rng_state(state['torch'].cpu())
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[self.key] = self.get_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, '_resume', False) and self.key in checkpoint:
            self._pending = checkpoint[self.key]

    def before_train(self, runner) -> None:
        state, self._pending = self._pending, None
        if state:
            self.set_state(state)
            runner.logger.info('restored the random generators\' states of '
                               'the resumed checkpoint')

    def before_val(self, runner) -> None:
        self._before_val = self.get_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            self.set_state(self._before_val)
            self._before_val = None


def _as_python_state(state):
    """``random.setstate`` wants tuples; a round trip may give lists."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise ``FloatingPointError`` when the training loss is NaN or inf.

    Args:
        interval (int): Check every ``interval`` iterations. Defaults to 1.
    """

    priority = 'VERY_HIGH'

    def __init__(self, interval: int = 1):
        self.interval = interval

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not outputs or not self.every_n_train_iters(runner,
                                                       self.interval):
            return
        loss = outputs.get('loss')
        if loss is None:
            return
        value = float(loss.detach().float().cpu()) if torch.is_tensor(
            loss) else float(loss)
        if not math.isfinite(value):
            parts = ', '.join(
                f'{k}={float(v):.4g}' for k, v in outputs.items()
                if k != 'loss' and (torch.is_tensor(v) and v.numel() == 1
                                    or isinstance(v, (int, float))))
            raise FloatingPointError(
                f'training loss became {value} at iteration {runner.iter + 1}'
                f' (epoch {runner.epoch + 1}); stopping. Components: '
                f'{parts or "n/a"}. Likely causes: '
                f'{"; ".join(likely_causes(runner))}.')


def _model(runner):
    return unwrap_model(runner.model)


def likely_causes(runner) -> list:
    """What in this run can make the loss diverge, most certain first."""
    causes = []
    drop = max((float(getattr(m, 'drop_prob', 0) or 0)
                for m in _model(runner).modules()), default=0.)
    if drop > 1:
        causes.append(f'a drop-path probability of {drop:g} (the model\'s '
                      f'drop_path_rate must be in [0, 1))')
    wrapper = runner.optim_wrapper
    if hasattr(wrapper, 'optimizer') and \
            getattr(wrapper, 'clip_grad_kwargs', None) is None:
        causes.append('no gradient clipping (set optim_wrapper.clip_grad, '
                      'e.g. dict(max_norm=5.0))')
    try:
        lrs = sorted({float(g['lr'])
                      for g in wrapper.optimizer.param_groups})
        causes.append(f'the learning rate ({", ".join(f"{v:g}" for v in lrs)}'
                      f'): lower optim_wrapper.optimizer.lr')
    except (AttributeError, KeyError, TypeError):
        causes.append('the learning rate: lower optim_wrapper.optimizer.lr')
    causes.append('the data of this iteration')
    return causes


class _DeferredRemovals:
    """A file backend that records ``remove`` / ``rmtree`` calls instead of
    running them (everything else goes to the wrapped backend)."""

    def __init__(self, backend):
        self.backend = backend
        self.calls = []

    def remove(self, path):
        self.calls.append(('remove', path))

    def rmtree(self, path):
        self.calls.append(('rmtree', path))

    def __getattr__(self, name):
        return getattr(self.backend, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, made safe against failed and killed
    saves (same arguments).

    * Local checkpoints are written atomically (the ``'atomic_local'`` file
      backend, unless ``backend_args`` says otherwise).
    * Checkpoints that ``max_keep_ckpts`` or a new best one make obsolete
      are removed only after the new checkpoint is written: a save that
      fails or is killed at any moment leaves every previous checkpoint.
    * At the start of a run, temporary files of a killed save are removed.
    * With ``resume=True`` (``--resume``): the newest checkpoint of the work
      dir that loads and fits the model is resumed from, naming each newer
      one skipped; if the work dir holds checkpoints but none loads, the run
      fails naming each and why (it starts from scratch only when there was
      nothing to resume). A resumed run takes the checkpoint's seed before
      its data loader draws anything (exact resume with ``seed=None``).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.backend_args is None and self.file_client_args is None and \
                '://' not in str(self.out_dir or ''):
            self.backend_args = dict(backend=ATOMIC_BACKEND)

    def before_run(self, runner) -> None:
        folders = {runner.work_dir}
        if self.out_dir is not None and '://' not in str(self.out_dir):
            folders.add(osp.join(str(self.out_dir),
                                 osp.basename(runner.work_dir.rstrip('/'))))
        for folder in sorted(folders) if is_main_process() else ():
            for path in remove_temporary_files(folder):
                runner.logger.warning(f'removed {path}, left by a save that '
                                      f'was interrupted')
        missing = {'RandomStateHook', 'FiniteLossHook'} - {
            type(h).__name__ for h in runner.hooks}
        if missing:
            runner.logger.warning(
                f'custom_hooks has no {" / ".join(sorted(missing))}: this run '
                f'has no exact resume / NaN stop. A config that sets '
                f'custom_hooks must list them too (see '
                f'_base_/default_runtime.py).')
        if getattr(runner, '_resume', False):
            self._resolve_resume(runner)

    @staticmethod
    def _resolve_resume(runner) -> None:
        model = _model(runner)
        if runner._load_from:  # --resume PATH: fail at once if unusable
            meta = check_resumable(runner._load_from, model)
        else:
            path, meta = find_resumable_checkpoint(runner.work_dir,
                                                   runner.logger, model)
            if path is None:
                runner.logger.info(f'--resume: no checkpoint in '
                                   f'{runner.work_dir}; starting from '
                                   f'scratch')
                runner._resume = False
                return
            runner.logger.info(f'--resume: resuming from {path}')
            runner._load_from = path
        follow_checkpoint_seed(runner, meta.get('seed'))

    @contextmanager
    def _removals_after_save(self):
        backend = self.file_backend
        if isinstance(backend, _DeferredRemovals):  # nested save
            yield
            return
        self.file_backend = deferred = _DeferredRemovals(backend)
        try:
            yield
        finally:
            self.file_backend = backend
        # reached only when the save succeeded
        written = {self.last_ckpt, getattr(self, 'best_ckpt_path', None),
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for method, path in deferred.calls:
            if path not in written:
                getattr(backend, method)(path)

    def _save_checkpoint_with_step(self, runner, step, meta):
        with self._removals_after_save():
            super()._save_checkpoint_with_step(runner, step, meta)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        with self._removals_after_save():
            super()._save_best_checkpoint(runner, metrics)


def follow_checkpoint_seed(runner, seed) -> None:
    """Take the resumed checkpoint's seed now and rebuild the training data
    loader with it (mmengine re-seeds only after the loader is built, so a
    run with ``seed=None`` would otherwise draw other samples and augment
    them differently after resuming)."""
    if seed is None or runner._randomness_cfg.get('seed') == seed:
        return
    runner._randomness_cfg.update(seed=seed)
    runner.set_randomness(**runner._randomness_cfg)
    loader_cfg = runner._train_dataloader
    loop = runner.train_loop
    if not isinstance(loader_cfg, dict):
        return
    loop.dataloader = runner.build_dataloader(
        loader_cfg, seed=runner.seed,
        diff_rank_seed=runner._randomness_cfg.get('diff_rank_seed', False))
    if hasattr(loop, 'dataloader_iterator'):  # iteration-based loops
        from mmengine.runner.loops import _InfiniteDataloaderIterator
        loop.dataloader_iterator = _InfiniteDataloaderIterator(
            loop.dataloader)
