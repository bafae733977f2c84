# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Export-time replacements: modules that compute the same function as a
library module with operations that ONNX can express for inputs of any size.

Only one is needed by this project's configs: adaptive average pooling to an
output size other than 1 (the pyramid pooling module of mmseg's UPerHead,
scales 1, 2, 3, 6). torch's TorchScript-based exporter refuses it unless the
input size is fixed and a multiple of the output size; here the pooling is
written as two products with averaging matrices built from the input's
(dynamic) height and width, with the bins of
:class:`torch.nn.AdaptiveAvgPool2d` (``floor(i * n / out)`` to
``ceil((i + 1) * n / out)``).
"""
from typing import Tuple

import torch
import torch.nn as nn


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


def make_exportable(model: nn.Module) -> int:
    """Replace, in place, every module of ``model`` that has an exportable
    equivalent here; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is nn.AdaptiveAvgPool2d
                    and _pair(child.output_size) != (1, 1)):
                setattr(parent, name,
                        MatrixAdaptiveAvgPool2d(_pair(child.output_size)))
                replaced += 1
    return replaced
