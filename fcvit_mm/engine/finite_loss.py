# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""A stop at the first non-finite loss: :class:`FiniteLossHook` raises
``FloatingPointError`` naming the iteration and the likely causes it can see
(:func:`likely_causes`), instead of running on for hours of NaN."""
import math

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


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


def likely_causes(runner) -> list:
    """What in this run can make the loss diverge, most certain first."""
    causes = []
    drop = max((float(getattr(m, 'drop_prob', 0) or 0)
                for m in runner.model.modules()), default=0.)
    if drop >= 1:  # every sample dropped: 0 / 0
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
