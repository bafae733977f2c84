# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Fast execution of FCViT blocks: the same math, other kernels and layout.

The plain formulation in :mod:`fcvit_mm.models.backbones.fcvit` runs on
NCHW-contiguous tensors and follows the reference op by op. The functions
here run a block on *channels-last* tensors (logically NCHW, stored NHWC),
which lets every pointwise (1x1) convolution be a plain matrix product on an
``(N*H*W, C)`` view and the depthwise convolutions use oneDNN's channels-last
kernels. Nothing changes the model's math; what changes:

* **Layout.** Blocks take and return channels-last tensors.
* **Algebraic folding.** The affine of the channel mixer's GroupNorm is
  folded into the following 1x1 convolution (``W diag(a) x + W b + c``) and
  the layer scale ``ls2`` into the last one (``diag(ls) W x + ls * c``), both
  on the parameters (cheap, and autograd gives the same gradients).
* **Global context as matrix products.** The per-head token-to-global
  similarity is one batched product with a block-diagonal ``(C, heads)``
  matrix, and ``x + context`` one ``baddbmm`` with a block-diagonal
  ``(heads, C)`` matrix.
* **Depthwise weight gradient by FFT** (CPU). oneDNN's backward-weights pass
  for the 11x11 depthwise convolution is several times slower than its
  forward; the weight gradient is a cross-correlation of the input with the
  output gradient, summed over the batch, which an FFT computes exactly (up
  to float rounding of the same order as the direct sum).
* **Fused oneDNN kernels in inference** (CPU, float32, no autograd):
  depthwise conv + GELU; the pointwise products apply their GELU or
  residual add in place (faster here than oneDNN's fused linear post-ops).
* **Batch chunks for large hidden tensors** (CPU): the channel mixer runs on
  groups of samples so that its widest tensor stays below
  :data:`CHUNK_BYTES`. This keeps the working set cache-friendly and, with
  glibc's allocator, below its mmap threshold (32 MiB at most), above which
  every allocation is returned to the OS on free and page-faulted in again
  on the next use (a large share of the time on CPU otherwise).

Everything is written with ordinary differentiable PyTorch ops (except the
FFT depthwise-weight gradient, a small ``autograd.Function``), so CUDA and
autocast run the same code without the CPU-only kernels.
"""
from typing import Optional

import torch
import torch.nn.functional as F

#: Upper bound (bytes) of the channel mixer's hidden tensor per chunk on CPU.
CHUNK_BYTES = 16 << 20


# ---------------------------------------------------------------------- #
# helpers
# ---------------------------------------------------------------------- #
def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def nhwc(x: torch.Tensor) -> torch.Tensor:
    """NHWC view of a channels-last NCHW tensor (a copy if it is not)."""
    y = x.permute(0, 2, 3, 1)
    return y if y.is_contiguous() else y.contiguous()


def nchw(x: torch.Tensor) -> torch.Tensor:
    """Channels-last NCHW view of an NHWC-contiguous tensor."""
    return x.permute(0, 3, 1, 2)


def _mkldnn_fusable(x: torch.Tensor, *params: Optional[torch.Tensor]) -> bool:
    """Whether oneDNN's fused inference kernels may run: CPU, float32,
    nothing to differentiate, no autocast."""
    if x.device.type != 'cpu' or x.dtype != torch.float32:
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    if torch.is_autocast_enabled('cpu'):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(
            p is not None and p.requires_grad for p in params)):
        return False
    return True


def linear(x: torch.Tensor,
           weight: torch.Tensor,
           bias: Optional[torch.Tensor],
           gelu: bool = False,
           residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[residual +] [gelu](x @ weight.T + bias)`` on the last dim of an
    NHWC tensor (``gelu`` and ``residual`` are exclusive)."""
    assert not (gelu and residual is not None)
    y = F.linear(x, weight, bias)
    if _mkldnn_fusable(x, weight, bias):
        # nothing to differentiate: GELU and the residual in place on the
        # product (measured faster here than oneDNN's fused post-ops, whose
        # erf GELU is slow on AVX2, and no second output tensor)
        if gelu:
            return torch.ops.aten.gelu_(y)
        return y if residual is None else y.add_(residual)
    if gelu:
        y = F.gelu(y)
    if residual is not None:
        y = residual + y
    return y


# ---------------------------------------------------------------------- #
# depthwise convolution
# ---------------------------------------------------------------------- #
def _fft_size(n: int) -> int:
    """Smallest integer >= n with prime factors 2, 3, 5 only (measured: a
    transform of 64 is ~1.8x faster than one of 63 = 3 * 3 * 7)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def depthwise_weight_grad_fft(x: torch.Tensor, grad_out: torch.Tensor,
                              kernel_size, padding) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise convolution via FFT.

    ``grad_w[c, i, j] = sum_{b,y,x} grad_out[b,c,y,x] *
    x[b, c, y + i - ph, x + j - pw]`` (zero outside the image) is a
    cross-correlation; with a transform size of at least
    ``H + max(ph, kh - 1 - ph)`` the circular correlation has no wrap-around
    for the needed shifts, so it equals the direct sum up to rounding.

    Returns a ``(C, 1, kh, kw)`` tensor in ``x``'s dtype.
    """
    kh, kw = kernel_size
    ph, pw = padding
    B, C, H, W = x.shape
    if grad_out.shape != x.shape:
        raise ValueError('depthwise_weight_grad_fft needs a same-size '
                         f'convolution, got input {tuple(x.shape)} and '
                         f'output gradient {tuple(grad_out.shape)}')
    P = _fft_size(H + max(ph, kh - 1 - ph))
    Q = _fft_size(W + max(pw, kw - 1 - pw))
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) \
        else torch.float32
    X = torch.fft.rfft2(x.contiguous().to(dtype), s=(P, Q))
    G = torch.fft.rfft2(grad_out.contiguous().to(dtype), s=(P, Q))
    S = (X * G.conj()).sum(0)  # C, P, Q//2+1
    corr = torch.fft.irfft2(S, s=(P, Q))  # C, P, Q
    rows = torch.arange(-ph, kh - ph, device=x.device) % P
    cols = torch.arange(-pw, kw - pw, device=x.device) % Q
    out = corr.index_select(1, rows).index_select(2, cols)
    return out.to(x.dtype).unsqueeze(1)


class _DepthwiseConvFFTGrad(torch.autograd.Function):
    """Depthwise conv (stride 1, no dilation): forward and input gradient by
    the usual kernels, weight gradient by :func:`depthwise_weight_grad_fft`.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.padding = padding
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        C = x.shape[1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], list(ctx.padding), [1, 1],
                False, [0, 0], C, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad_fft(x, grad, weight.shape[-2:],
                                               ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


#: Depthwise kernels from this size on use the FFT weight gradient on CPU.
FFT_GRAD_MIN_KERNEL = 7


def depthwise_conv(x: torch.Tensor, conv, gelu: bool = False) -> torch.Tensor:
    """``[gelu](conv(x))`` for a depthwise ``nn.Conv2d`` on a channels-last
    tensor; returns channels-last."""
    pad = tuple(conv.padding)
    if _mkldnn_fusable(x, conv.weight, conv.bias):
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, list(pad), [1, 1], [1, 1],
            conv.groups, 'gelu' if gelu else 'none', [],
            'none' if gelu else None)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or conv.weight.requires_grad)
    if (needs_grad and x.device.type == 'cpu'
            and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled('cpu')
            and min(conv.kernel_size) >= FFT_GRAD_MIN_KERNEL
            and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1)):
        y = _DepthwiseConvFFTGrad.apply(x, conv.weight, conv.bias, pad)
    else:
        y = conv(x)
    if not y.is_contiguous(memory_format=torch.channels_last):
        y = to_channels_last(y)
    return F.gelu(y) if gelu else y


# ---------------------------------------------------------------------- #
# global context
# ---------------------------------------------------------------------- #
def _block_diag_rows(v: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C) -> (B, C, heads), column h holding head h's part of ``v``."""
    B, C = v.shape
    eye = torch.eye(heads, dtype=v.dtype, device=v.device)
    return (v.view(B, heads, C // heads, 1) * eye.view(1, heads, 1, heads)
            ).reshape(B, C, heads)


def _block_diag_cols(v: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C) -> (B, heads, C), row h holding head h's part of ``v``."""
    B, C = v.shape
    eye = torch.eye(heads, dtype=v.dtype, device=v.device)
    return (v.view(B, 1, heads, C // heads) * eye.view(1, heads, heads, 1)
            ).reshape(B, heads, C)


def gc_similarity(gc, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``GlobalContext._similarity`` on a channels-last ``x``: (B, heads, N).

    The scores of all heads come from one product of the ``(N, C)`` token
    matrix with a block-diagonal ``(C, heads)`` matrix of the mean token;
    statistics are taken in float32 at least.
    """
    B, C, H, W = x.shape
    xf = nhwc(x).reshape(B, H * W, C)
    s = torch.bmm(xf, _block_diag_rows(g, gc.heads)) * gc.scale  # B, N, h
    dtype = s.dtype
    if dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    std, mean = torch.std_mean(s.view(B, -1), dim=1, keepdim=True)
    s = (s - mean.unsqueeze(2)) / (std.unsqueeze(2) + gc.eps)
    s = torch.addcmul(gc.rescale_bias.to(s.dtype), s,
                      gc.rescale_weight.to(s.dtype))
    return s.to(dtype).transpose(1, 2)


def gc_add(gc, x: torch.Tensor) -> torch.Tensor:
    """``x + gc(x)`` for a channels-last ``x``, returned channels-last.

    The context ``s[b, h, n] * v[b, c in head h]`` is added by one
    ``baddbmm`` of the ``(N, heads)`` scores with a block-diagonal
    ``(heads, C)`` matrix of ``v``.
    """
    B, C, H, W = x.shape
    xf = nhwc(x).reshape(B, H * W, C)
    g = xf.mean(1)
    s = gc._similarity(x, g)  # B, heads, N (may be overridden)
    u = gc.fc1(g).view(B, 2, -1).amax(dim=1)
    v = gc.fc2(u)
    vbd = _block_diag_cols(v, gc.heads).to(xf.dtype)
    out = torch.baddbmm(xf, s.transpose(1, 2).to(xf.dtype), vbd)
    return nchw(out.view(B, H, W, C))


# ---------------------------------------------------------------------- #
# block
# ---------------------------------------------------------------------- #
def group_norm(x: torch.Tensor, gn) -> torch.Tensor:
    """GroupNorm on a channels-last tensor, returned channels-last."""
    if x.device.type != 'cpu' and gn.num_groups == 1:
        # GPU GroupNorm kernels want NCHW: normalise the NHWC view instead
        xl = nhwc(x)
        y = F.layer_norm(xl, xl.shape[1:], eps=gn.eps)
        return nchw(torch.addcmul(gn.bias.to(y.dtype), y,
                                  gn.weight.to(y.dtype)))
    y = F.group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps)
    if not y.is_contiguous(memory_format=torch.channels_last):
        y = to_channels_last(y)
    return y


def pointwise_mlp(seq, x: torch.Tensor) -> torch.Tensor:
    """``GELU(Conv1x1(GELU(Conv1x1(x))))`` (the token mixer's ``fc1``/``fc2``
    followed by the mixer's GELU) on a channels-last tensor."""
    f0, f2 = seq[0], seq[2]
    xl = nhwc(x)
    h = linear(xl, f0.weight.flatten(1), f0.bias, gelu=True)
    return nchw(linear(h, f2.weight.flatten(1), f2.bias, gelu=True))


def token_mixer(tm, x: torch.Tensor) -> torch.Tensor:
    x = gc_add(tm.gc1, x)
    x = pointwise_mlp(tm.fc1, depthwise_conv(x, tm.dw1))
    x = gc_add(tm.gc2, x)
    return pointwise_mlp(tm.fc2, depthwise_conv(x, tm.dw2))


def _chunk_size(x: torch.Tensor, hidden: int) -> int:
    B, H, W, _ = x.shape
    if x.device.type != 'cpu':
        return B
    per_sample = H * W * hidden * x.element_size()
    return max(1, min(B, CHUNK_BYTES // max(per_sample, 1)))


def channel_mixer_residual(blk, x: torch.Tensor) -> torch.Tensor:
    """``x + DropPath(ls2 * ChannelMixer(GN2(x)))`` on a channels-last x."""
    cm, gn = blk.channel_mixer, blk.norm2
    B, C, H, W = x.shape
    hidden = cm.fc1.out_channels
    # fold GN2's affine into fc1 and the layer scale into fc2
    w1 = cm.fc1.weight.view(hidden, C)
    b1 = torch.addmv(cm.fc1.bias, w1, gn.bias)
    w1 = w1 * gn.weight
    ls = blk.layer_scale_2
    w2 = cm.fc2.weight.view(C, hidden) * ls.view(C, 1)
    b2 = cm.fc2.bias * ls

    drop_path = blk.drop_path
    path_active = (getattr(drop_path, 'drop_prob', 0.) > 0
                   and drop_path.training)
    drop_active = cm.drop.p > 0 and cm.drop.training
    xl = nhwc(x)
    cb = _chunk_size(xl, hidden)
    outs = []
    for xc in (xl.split(cb) if cb < B else (xl, )):
        xn = F.layer_norm(xc, xc.shape[1:], eps=gn.eps)
        h = nhwc(depthwise_conv(
            nchw(linear(xn, w1, b1)), cm.dwconv, gelu=True))
        if path_active:  # residual added after the whole batch
            outs.append(cm.drop(linear(cm.drop(h), w2, b2)))
        elif drop_active:
            outs.append(xc + cm.drop(linear(cm.drop(h), w2, b2)))
        else:
            outs.append(linear(h, w2, b2, residual=xc))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    if path_active:
        out = xl + drop_path(out)
    return nchw(out)


def block_forward(blk, x: torch.Tensor) -> torch.Tensor:
    """One FCViT block on a channels-last tensor (returned channels-last)."""
    x = to_channels_last(x)
    t = token_mixer(blk.token_mixer, group_norm(x, blk.norm1))
    ls = blk.layer_scale_1.view(1, -1, 1, 1)
    if getattr(blk.drop_path, 'drop_prob', 0.) > 0 and blk.drop_path.training:
        x = x + blk.drop_path(ls * t)
    else:
        x = torch.addcmul(x, t, ls)
    return channel_mixer_residual(blk, x)
