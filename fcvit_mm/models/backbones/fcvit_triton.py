# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Triton kernels of FCViT's CUDA fast path, each with its plain fallback.

:func:`group_norm1`: a GroupNorm with one group (every sample standardised
over all its channels and positions, biased variance, then an optional
per-channel affine) on an NHWC tensor, forward and backward. CUDA's own
GroupNorm kernels make a channels-last input contiguous in NCHW (a transpose
each way per norm), and a LayerNorm over the ``(H, W, C)`` view reduces each
sample in a single thread block (a few dozen blocks for a whole batch). Here
each sample is cut into tiles of ``BLOCK_N`` positions x all channels:

1. each tile's mean and sum of squared deviations (float32, float64 for a
   float64 input), combined per sample with Chan's parallel formula;
2. ``y = (x - mean) * rstd [* w + b]``, stored in ``x``'s dtype (bf16 / fp16
   activations stay half: only the statistics are float32);
3. backward: per tile, the sums of ``g = dy [* w]`` and of ``g * xhat``
   (per sample) and of ``dy * xhat`` and ``dy`` (per channel: the affine's
   gradients), then ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))``.

:func:`group_norm1_reference` is the same function in PyTorch ops (the
fallback where Triton does not run, and the tests' reference).
:func:`kernel_applies` says where the kernels run: CUDA tensors of float32,
float16 or bfloat16 when Triton is importable. Without Triton this module
still imports (:data:`HAS_TRITON` is False) and only the fallback exists.

Tests run the kernels on CPU in Triton's interpreter (``TRITON_INTERPRET=1``
set before this module is first imported), and on CUDA when present.
"""
from typing import Optional, Tuple

import torch

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # pragma: no cover - Triton ships with CUDA torch
    triton = tl = None
    HAS_TRITON = False

#: Elements per tile (positions x channels rounded up to a power of two).
TILE_ELEMENTS = 4096
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def group_norm1_reference(x: torch.Tensor, weight: Optional[torch.Tensor],
                          bias: Optional[torch.Tensor],
                          eps: float) -> torch.Tensor:
    """One-group GroupNorm of a channels-last-stored tensor whose last dim is
    the channel (NHWC), statistics in float32 at least, output in ``x``'s
    dtype; the plain fallback of :func:`group_norm1`."""
    _check(x, weight, bias)
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    var, mean = torch.var_mean(
        xf, dim=tuple(range(1, x.dim())), correction=0, keepdim=True)
    y = (xf - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight.to(y.dtype) + bias.to(y.dtype)
    return y.to(x.dtype)


def kernel_applies(x: torch.Tensor) -> bool:
    """Whether :func:`group_norm1` runs its Triton kernels on ``x``."""
    return (HAS_TRITON and x.is_cuda and x.dtype in _KERNEL_DTYPES
            and x.numel() > 0)


def group_norm1(x: torch.Tensor, weight: Optional[torch.Tensor],
                bias: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """One-group GroupNorm of an NHWC tensor ``x`` (B, H, W, C) by the Triton
    kernels (differentiable); same numbers as
    :func:`group_norm1_reference`. ``weight`` and ``bias``: (C, ) or both
    None."""
    if not HAS_TRITON:
        raise RuntimeError('group_norm1: Triton is not importable; use '
                           'group_norm1_reference')
    _check(x, weight, bias)
    return _GroupNorm1.apply(x, weight, bias, float(eps))


def _check(x, weight, bias):
    if x.dim() != 4:
        raise ValueError(f'group_norm1 expects an NHWC tensor (4 dims), got '
                         f'shape {tuple(x.shape)}')
    if (weight is None) != (bias is None):
        raise ValueError('group_norm1: give weight and bias together, or '
                         'neither')
    if weight is not None and (weight.shape != (x.shape[-1], )
                               or bias.shape != (x.shape[-1], )):
        raise ValueError(
            f'group_norm1: weight and bias must have shape '
            f'({x.shape[-1]},) (the last dim of x), got '
            f'{tuple(weight.shape)} and {tuple(bias.shape)}')


def _tiles(N: int, C: int) -> Tuple[int, int, int]:
    """(BLOCK_N, BLOCK_C, number of tiles per sample)."""
    block_c = triton.next_power_of_2(C)
    block_n = max(1, min(triton.next_power_of_2(N),
                         TILE_ELEMENTS // block_c))
    return block_n, block_c, triton.cdiv(N, block_n)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


if HAS_TRITON:

    @triton.jit
    def _stats_kernel(X, PART, N, C, BLOCK_N: tl.constexpr,
                      BLOCK_C: tl.constexpr, ACC: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        j = tl.program_id(1)
        rows = j * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tl.arange(0, BLOCK_C)
        mask = (rows[:, None] < N) & (cols[None, :] < C)
        offs = b * N * C + rows[:, None] * C + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.).to(ACC)
        count = (tl.minimum(N - j * BLOCK_N, BLOCK_N) * C).to(ACC)
        mean = tl.sum(tl.sum(x, axis=1), axis=0) / count
        d = tl.where(mask, x - mean, 0.)
        m2 = tl.sum(tl.sum(d * d, axis=1), axis=0)
        k = (b * tl.num_programs(1) + j) * 2
        tl.store(PART + k, mean)
        tl.store(PART + k + 1, m2)

    @triton.jit
    def _normalize_kernel(X, Y, W, BIAS, MEAN, RSTD, N, C,
                          HAS_AFFINE: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_C: tl.constexpr, ACC: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        j = tl.program_id(1)
        rows = j * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tl.arange(0, BLOCK_C)
        mask = (rows[:, None] < N) & (cols[None, :] < C)
        offs = b * N * C + rows[:, None] * C + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.).to(ACC)
        y = (x - tl.load(MEAN + b)) * tl.load(RSTD + b)
        if HAS_AFFINE:
            w = tl.load(W + cols, mask=cols < C, other=0.).to(ACC)
            bias = tl.load(BIAS + cols, mask=cols < C, other=0.).to(ACC)
            y = y * w[None, :] + bias[None, :]
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward_sums_kernel(X, DY, W, MEAN, RSTD, PART_S, PART_C, N, C,
                              HAS_AFFINE: tl.constexpr,
                              BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                              ACC: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        j = tl.program_id(1)
        tile = b * tl.num_programs(1) + j
        rows = j * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tl.arange(0, BLOCK_C)
        mask = (rows[:, None] < N) & (cols[None, :] < C)
        offs = b * N * C + rows[:, None] * C + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.).to(ACC)
        dy = tl.load(DY + offs, mask=mask, other=0.).to(ACC)
        xhat = tl.where(mask, (x - tl.load(MEAN + b)) * tl.load(RSTD + b),
                        0.)
        if HAS_AFFINE:
            w = tl.load(W + cols, mask=cols < C, other=0.).to(ACC)
            g = dy * w[None, :]
            tl.store(PART_C + tile * 2 * C + cols,
                     tl.sum(dy * xhat, axis=0), mask=cols < C)
            tl.store(PART_C + (tile * 2 + 1) * C + cols,
                     tl.sum(dy, axis=0), mask=cols < C)
        else:
            g = dy
        tl.store(PART_S + tile * 2, tl.sum(tl.sum(g, axis=1), axis=0))
        tl.store(PART_S + tile * 2 + 1,
                 tl.sum(tl.sum(g * xhat, axis=1), axis=0))

    @triton.jit
    def _backward_dx_kernel(X, DY, W, MEAN, RSTD, MG, MGX, DX, N, C,
                            HAS_AFFINE: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_C: tl.constexpr, ACC: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        j = tl.program_id(1)
        rows = j * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tl.arange(0, BLOCK_C)
        mask = (rows[:, None] < N) & (cols[None, :] < C)
        offs = b * N * C + rows[:, None] * C + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.).to(ACC)
        dy = tl.load(DY + offs, mask=mask, other=0.).to(ACC)
        rstd = tl.load(RSTD + b)
        xhat = (x - tl.load(MEAN + b)) * rstd
        if HAS_AFFINE:
            w = tl.load(W + cols, mask=cols < C, other=0.).to(ACC)
            g = dy * w[None, :]
        else:
            g = dy
        dx = rstd * (g - tl.load(MG + b) - xhat * tl.load(MGX + b))
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)


def _stats_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _tile_counts(N: int, C: int, block_n: int, tiles: int, dtype,
                 device) -> torch.Tensor:
    counts = torch.full((tiles, ), float(block_n * C), dtype=dtype,
                        device=device)
    counts[-1] = float((N - (tiles - 1) * block_n) * C)
    return counts


class _GroupNorm1(torch.autograd.Function):
    """Forward and backward of :func:`group_norm1` (NHWC, one group)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        B, H, W_, C = x.shape
        N = H * W_
        x = x.contiguous()
        block_n, block_c, tiles = _tiles(N, C)
        sdt = _stats_dtype(x)
        acc = _acc(x.dtype)
        part = torch.empty((B, tiles, 2), dtype=sdt, device=x.device)
        _stats_kernel[(B, tiles)](x, part, N, C, BLOCK_N=block_n,
                                  BLOCK_C=block_c, ACC=acc)
        # Chan et al.: combine the tiles' means and squared deviations
        counts = _tile_counts(N, C, block_n, tiles, sdt, x.device)
        means, m2s = part[..., 0], part[..., 1]
        mean = (means * counts).sum(1) / (N * C)
        m2 = m2s.sum(1) + (counts * (means - mean[:, None]).square()).sum(1)
        rstd = torch.rsqrt(m2 / (N * C) + eps)
        y = torch.empty_like(x)
        affine = weight is not None
        _normalize_kernel[(B, tiles)](
            x, y, weight if affine else x, bias if affine else x, mean, rstd,
            N, C, HAS_AFFINE=affine, BLOCK_N=block_n, BLOCK_C=block_c,
            ACC=acc)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.affine = affine
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        B, H, W_, C = x.shape
        N = H * W_
        dy = dy.contiguous()
        block_n, block_c, tiles = _tiles(N, C)
        sdt = _stats_dtype(x)
        acc = _acc(x.dtype)
        affine = ctx.affine
        part_s = torch.empty((B, tiles, 2), dtype=sdt, device=x.device)
        part_c = torch.empty((B, tiles, 2, C) if affine else (1, ),
                             dtype=sdt, device=x.device)
        _backward_sums_kernel[(B, tiles)](
            x, dy, weight if affine else x, mean, rstd, part_s, part_c, N, C,
            HAS_AFFINE=affine, BLOCK_N=block_n, BLOCK_C=block_c, ACC=acc)
        sums = part_s.sum(1) / (N * C)
        mg, mgx = sums[:, 0].contiguous(), sums[:, 1].contiguous()
        dx = torch.empty_like(x)
        _backward_dx_kernel[(B, tiles)](
            x, dy, weight if affine else x, mean, rstd, mg, mgx, dx, N, C,
            HAS_AFFINE=affine, BLOCK_N=block_n, BLOCK_C=block_c, ACC=acc)
        grad_w = grad_b = None
        if affine:
            per_channel = part_c.sum((0, 1))
            grad_w = per_channel[0].to(weight.dtype)
            grad_b = per_channel[1].to(weight.dtype)
        return dx, grad_w, grad_b, None
