# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Export-time replacements: modules that compute the same function as a
library module with operations that ONNX can express for inputs of any size.

Two are needed by this project's configs:

* adaptive average pooling to an output size other than 1 (the pyramid
  pooling module of mmseg's UPerHead, scales 1, 2, 3, 6). torch's
  TorchScript-based exporter refuses it unless the input size is fixed and
  a multiple of the output size; here the pooling is written as two
  products with averaging matrices built from the input's (dynamic) height
  and width, with the bins of :class:`torch.nn.AdaptiveAvgPool2d`
  (``floor(i * n / out)`` to ``ceil((i + 1) * n / out)``);
* mmseg's ``Upsample`` module (Semantic FPN's head), which computes its
  output size with Python ``int()`` of the input's size: traced, that size
  becomes a constant and the graph would resize every input to the export
  size's maps. For an integer scale factor, interpolating by the factor is
  the same function (same output size, same sampling positions), and
  exports as a resize by a constant factor.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pool_matrix(size, out: int, like: torch.Tensor) -> torch.Tensor:
    """(out, size) matrix: row i averages the i-th adaptive-pooling bin of
    ``size`` positions."""
    i = torch.arange(out, device=like.device)
    start = torch.div(i * size, out, rounding_mode='floor')
    end = torch.div((i + 1) * size + out - 1, out, rounding_mode='floor')
    pos = torch.arange(size, device=like.device)
    inside = (pos.unsqueeze(0) >= start.unsqueeze(1)) & (
        pos.unsqueeze(0) < end.unsqueeze(1))
    return inside.to(like.dtype) / (end - start).to(like.dtype).unsqueeze(1)


class MatrixAdaptiveAvgPool2d(nn.Module):
    """:class:`torch.nn.AdaptiveAvgPool2d` as ``P_h @ x @ P_w^T`` (same
    bins, same result up to float rounding), exportable with dynamic input
    sizes."""

    def __init__(self, output_size: Tuple[int, int]):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        oh, ow = self.output_size
        ph = _pool_matrix(x.shape[-2], oh, x)
        pw = _pool_matrix(x.shape[-1], ow, x)
        return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))


def _pair(size) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if any(s is None for s in size):
        raise ValueError(f'adaptive pooling with a free output dimension '
                         f'({size}) cannot be exported with dynamic sizes')
    return tuple(size)


class ScaleUpsample(nn.Module):
    """mmseg's ``Upsample(scale_factor=k)`` for an integer ``k``, as an
    interpolation by the factor (exportable with dynamic sizes)."""

    def __init__(self, scale_factor: int, mode: str, align_corners):
        super().__init__()
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor,
                             mode=self.mode,
                             align_corners=self.align_corners)


def _is_mmseg_upsample(module: nn.Module) -> bool:
    cls = type(module)
    return cls.__name__ == 'Upsample' and cls.__module__.startswith('mmseg')


def _exportable(module: nn.Module):
    """The exportable equivalent of ``module``, or None if it needs none."""
    if (type(module) is nn.AdaptiveAvgPool2d
            and _pair(module.output_size) != (1, 1)):
        return MatrixAdaptiveAvgPool2d(_pair(module.output_size))
    if _is_mmseg_upsample(module) and not module.size:
        k = module.scale_factor
        if not isinstance(k, (int, float)) or float(k) != int(k):
            raise NotImplementedError(
                f'cannot export mmseg Upsample(scale_factor={k!r}) with '
                'dynamic sizes: only integer factors are supported')
        return ScaleUpsample(int(k), module.mode, module.align_corners)
    return None


def make_exportable(model: nn.Module) -> int:
    """Replace, in place, every module of ``model`` that has an exportable
    equivalent here; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _exportable(child)
            if new is not None:
                setattr(parent, name, new)
                replaced += 1
    return replaced
