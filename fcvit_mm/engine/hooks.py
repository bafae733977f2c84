# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Hooks that keep long training runs honest.

* :class:`RandomStateHook` stores the random generators' states in every
  checkpoint and restores them on resume, so that an interrupted and resumed
  run ends with the same weights as an uninterrupted one (data order and
  worker seeds are already deterministic in mmengine given the seed).
* :class:`FiniteLossHook` stops training at the first non-finite loss, naming
  the iteration, instead of running on for hours of NaN.
"""
import math
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


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
        random.setstate(_as_python_state(state['python']))
        n = state['numpy']
        np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32),
                             n['pos'], n['has_gauss'], n['gauss']))
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])

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
                f'{parts or "n/a"}. Lower the learning rate, enable gradient '
                f'clipping, or check the data of this iteration.')
