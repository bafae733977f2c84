# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Exact resume: an interrupted and resumed run ends with the same weights
as an uninterrupted one.

mmengine already makes data order and worker seeds deterministic given the
seed; :class:`RandomStateHook` adds the python, numpy and torch generators'
states to every checkpoint and restores them on resume. (The seed itself is
taken from the checkpoint by :mod:`.resume`.)
"""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from fcvit_mm.internals import get_private


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
    iteration-based loop replays the consumed batches (on onedl-mmengine,
    whose loop would skip them unloaded, this hook replays them).
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
        if self.key in checkpoint and get_private(runner, '_resume'):
            self._pending = checkpoint[self.key]

    def before_train(self, runner) -> None:
        state, self._pending = self._pending, None
        if state:
            self._load_consumed_batches(runner)
            self.set_state(state)
            runner.logger.info('restored the random generators\' states of '
                               'the resumed checkpoint')

    @staticmethod
    def _load_consumed_batches(runner) -> None:
        """Where the iteration-based loop would resume by moving its sampler
        forward without loading the batches already trained on
        (onedl-mmengine: ``fast_forward_on_resume=False``), load them here,
        as mmengine 0.10.7's loop does: the data workers' generators then
        stand where an uninterrupted run's stand. The loop is told the
        batches are consumed."""
        loop = runner.train_loop
        if getattr(loop, 'fast_forward_on_resume', True) or loop.iter <= 0:
            return
        runner.logger.info(
            f'loading the {loop.iter} batches trained on before the resumed '
            'checkpoint (exact resume: the data workers\' random generators '
            'advance as in an uninterrupted run); mmengine\'s note that it '
            'skips advancing the dataloader refers to this')
        for _ in range(loop.iter):
            next(loop.dataloader_iterator)
        loop.fast_forward_on_resume = True

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
