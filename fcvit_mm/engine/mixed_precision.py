# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Mixed-precision training on the CPU: bf16 autocast, float32 weights.

mmengine's ``AmpOptimWrapper`` (what ``--amp`` of every OpenMMLab
``tools/train.py`` asks for, and ``optim_wrapper=dict(type=
'AmpOptimWrapper')`` in a config) refuses to start without a GPU. Importing
fcvit_mm registers :class:`AmpOptimWrapper` in its place, under the same
name: on a GPU (the parameters on any device but the CPU) it *is*
mmengine's, unchanged; with the parameters on the CPU it runs the forward
under ``torch.autocast('cpu', dtype=torch.bfloat16)`` with float32 master
weights and no loss scaling (bf16 has float32's exponent range, so
gradients do not underflow). On a CPU without native bf16
(:func:`fcvit_mm.utils.cpu.bf16_support`) it trains in float32 and says
why, once.

Parts of mmcv and mmdet refuse bf16 tensors on the CPU (mmcv's ``nms``
kernel, mmdet's RoI extractors); :func:`install_float32_islands` runs them
in float32 while autocast is on, by wrapping them in memory (nothing on
disk changes; :mod:`fcvit_mm.internals` lists each).
"""
import functools
from contextlib import contextmanager
from typing import Callable, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper as MMEngineAmpOptimWrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from fcvit_mm.utils.cpu import bf16_support


def _on_cpu(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimiser's parameters live on the CPU."""
    for group in optimizer.param_groups:
        for p in group['params']:
            return p.device.type == 'cpu'
    return True


@OPTIM_WRAPPERS.register_module(name='AmpOptimWrapper', force=True)
class AmpOptimWrapper(MMEngineAmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper``, which also trains on the CPU.

    Same arguments as mmengine's. On the CPU ``dtype`` may be None or
    ``'bfloat16'`` (CPU autocast knows no other), and ``loss_scale`` is
    accepted and not used (nothing to scale in bf16). A checkpoint's
    ``loss_scaler`` state (from a GPU run) is ignored there, so a run can
    resume on either kind of device.
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = None,
                 use_fsdp: bool = False,
                 **kwargs):
        optimizer = kwargs.get('optimizer')
        self.on_cpu = optimizer is not None and _on_cpu(optimizer)
        if not self.on_cpu:
            super().__init__(loss_scale=loss_scale, dtype=dtype,
                             use_fsdp=use_fsdp, **kwargs)
            return
        OptimWrapper.__init__(self, **kwargs)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None) if dtype in \
                self.valid_dtypes else dtype
        if dtype not in (None, torch.bfloat16):
            raise ValueError(
                f'AmpOptimWrapper on the CPU trains in bfloat16 only (CPU '
                f'autocast knows no other); got dtype={dtype!r}: leave it '
                f'unset or set optim_wrapper.dtype=\'bfloat16\'')
        support = bf16_support()
        self.cast_dtype = torch.bfloat16 if support.native else None
        self.loss_scaler = None
        self._guarded = None  # the model whose convolutions are guarded
        self._scale_update_param = None
        if support.native:
            install_float32_islands()
            print_log(f'AmpOptimWrapper: CPU mixed precision, bf16 autocast '
                      f'with float32 weights ({support.reason})',
                      logger='current')
        else:
            print_log(f'AmpOptimWrapper: training in float32, not bf16: '
                      f'{support.reason}', logger='current', level=30)

    @property
    def autocast_enabled(self) -> bool:
        """Whether the forward runs under CPU bf16 autocast."""
        return self.on_cpu and self.cast_dtype is not None

    def backward(self, loss: torch.Tensor, **kwargs):
        if not self.on_cpu:
            return super().backward(loss, **kwargs)
        return OptimWrapper.backward(self, loss, **kwargs)

    def step(self, **kwargs):
        if not self.on_cpu:
            return super().step(**kwargs)
        return OptimWrapper.step(self, **kwargs)

    def state_dict(self) -> dict:
        if not self.on_cpu:
            return super().state_dict()
        return OptimWrapper.state_dict(self)

    def load_state_dict(self, state_dict: dict):
        if not self.on_cpu:
            return super().load_state_dict(state_dict)
        state_dict = dict(state_dict)
        state_dict.pop('loss_scaler', None)  # a GPU run's; unused here
        OptimWrapper.load_state_dict(self, state_dict)

    @contextmanager
    def optim_context(self, model: nn.Module):
        if not self.on_cpu:
            with super().optim_context(model):
                yield
            return
        if self.autocast_enabled and self._guarded is not model:
            guard_strided_convs(model)  # once per model, not every step
            self._guarded = model
        with OptimWrapper.optim_context(self, model), torch.autocast(
                'cpu', dtype=torch.bfloat16, enabled=self.autocast_enabled):
            yield


# ---------------------------------------------------------------------- #
# float32 islands
# ---------------------------------------------------------------------- #
def _to_float32(value):
    if isinstance(value, torch.Tensor) and value.dtype in (
            torch.bfloat16, torch.float16):
        return value.float()
    if isinstance(value, (list, tuple)) and any(
            isinstance(v, torch.Tensor) for v in value):
        return type(value)(_to_float32(v) for v in value)
    return value


def float32_island(fn: Callable) -> Callable:
    """``fn`` run in float32 while CPU autocast is on: autocast off inside,
    its low-precision tensor arguments (and tensors in list / tuple
    arguments) cast to float32. Outside autocast it is ``fn`` itself."""
    if getattr(fn, '_fcvit_float32_island', False):
        return fn

    @functools.wraps(fn)
    def island(*args, **kwargs):
        if not torch.is_autocast_enabled('cpu'):
            return fn(*args, **kwargs)
        args = tuple(_to_float32(a) for a in args)
        kwargs = {k: _to_float32(v) for k, v in kwargs.items()}
        with torch.autocast('cpu', enabled=False):
            return fn(*args, **kwargs)

    island._fcvit_float32_island = True
    return island


#: (module, attribute path) of every callable made a float32 island: the
#: libraries' CPU kernels and modules that refuse bf16 tensors
FLOAT32_ISLANDS = (
    ('mmcv.ops.nms', 'NMSop.forward'),
    ('mmdet.models.roi_heads.roi_extractors.single_level_roi_extractor',
     'SingleRoIExtractor.forward'),
)


def _resolve(module: str, path: str):
    """(owner, name, value) of ``module``'s dotted ``path``, or None if the
    module is not installed."""
    import importlib
    try:
        owner = importlib.import_module(module)
    except ImportError:
        return None
    *parents, name = path.split('.')
    for p in parents:
        owner = getattr(owner, p)
    return owner, name, owner.__dict__[name]


def install_float32_islands() -> None:
    """Make every entry of :data:`FLOAT32_ISLANDS` a
    :func:`float32_island` (once; entries of libraries that are not
    installed are skipped)."""
    for module, path in FLOAT32_ISLANDS:
        found = _resolve(module, path)
        if found is None:
            continue
        owner, name, value = found
        if isinstance(value, staticmethod):
            fn = value.__func__
            if not getattr(fn, '_fcvit_float32_island', False):
                setattr(owner, name, staticmethod(float32_island(fn)))
        elif not getattr(value, '_fcvit_float32_island', False):
            setattr(owner, name, float32_island(value))


def _float32_on_thin_map(module: nn.Module, args: tuple):
    """Forward pre-hook: under CPU autocast, a map one pixel high or wide
    goes through ``module`` in float32 (see :func:`guard_strided_convs`)."""
    x = args[0]
    if (torch.is_autocast_enabled('cpu') and isinstance(x, torch.Tensor)
            and x.dim() == 4 and min(x.shape[-2:]) == 1):
        module._fcvit_autocast_paused = True
        torch.set_autocast_enabled('cpu', False)
        return (x.float(), ) + tuple(args[1:])
    return None


def _resume_autocast(module: nn.Module, args: tuple, output):
    if module.__dict__.pop('_fcvit_autocast_paused', False):
        torch.set_autocast_enabled('cpu', True)


def guard_strided_convs(model: nn.Module) -> None:
    """Run every strided ``nn.Conv2d`` of ``model`` in float32 when CPU
    autocast gives it a map one pixel high or wide (hooks, added once).

    torch 2.14's bf16 backward-weights kernel of a strided convolution on
    the CPU reads memory it never wrote when the input is one pixel high
    (e.g. RetinaNet's P7 conv on a 64-pixel image): the weight gradient
    then differs from call to call, by up to 1e10
    (``tests/test_mixed_precision.py::test_strided_conv_on_thin_map``).
    Such maps cost nothing to compute in float32."""
    for m in model.modules():
        if (isinstance(m, nn.Conv2d) and max(m.stride) > 1
                and not getattr(m, '_fcvit_thin_map_guard', False)):
            m.register_forward_pre_hook(_float32_on_thin_map)
            m.register_forward_hook(_resume_autocast)
            m._fcvit_thin_map_guard = True

