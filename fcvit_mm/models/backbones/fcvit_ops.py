# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Kernels of FCViT's channels-last formulation: how an operation is
computed, never what.

The model's math lives in :mod:`fcvit_mm.models.backbones.fcvit`, where each
module holds its plain and its channels-last formulation side by side. The
channels-last formulation runs on tensors that are logically NCHW and stored
NHWC, so that a 1x1 convolution is a matrix product on an ``(N*H*W, C)``
view, and calls the kernels below.

**Kernel sets.** Every FCViT module holds one decided name, its
``kernels`` (:data:`KERNELS`), which says which code runs:

* ``'plain'``: the plain formulation (the op-by-op transcription of the
  reference on NCHW tensors); none of the kernels below run;
* ``'onnx'``: the plain formulation with the ONNX forms of the one-group
  GroupNorm (:func:`group_norm1`: one ``LayerNormalization``) and of the
  global context's addition (``GlobalContext._add_onnx``: 4-D tensors
  only), which an ONNX export writes with fewer ops;
* ``'cpu'``: the channels-last formulation with the CPU-tuned kernels:

  * :func:`linear`: a 1x1 convolution on an NHWC tensor (MKL GEMM); in
    inference (float32, nothing to differentiate) its GELU or residual add
    runs in place on the product.
  * :func:`depthwise_conv`: in inference oneDNN's fused convolution
    (+ GELU) kernel; in training, kernels from :data:`FFT_GRAD_MIN_KERNEL`
    on take their weight gradient from :func:`depthwise_weight_grad_fft`
    (oneDNN's backward-weights pass for an 11x11 depthwise convolution is
    several times slower than its forward; the gradient is a
    cross-correlation of the input with the output gradient, summed over
    the batch, which an FFT computes to float rounding).
  * :func:`batch_chunks`: the channel mixer's batch in chunks whose wide
    hidden tensor stays below :data:`CHUNK_BYTES` (cache-friendly, and under
    glibc's mmap threshold, above which every allocation is returned to the
    OS on free and page-faulted in again on the next use).

* ``'cuda'``: the channels-last formulation with none of the CPU pieces
  above; the one-group GroupNorms (:func:`group_norm`,
  :func:`normalize_nhwc`) keep the channels-last layout with float32
  statistics and an output in the input's dtype (Triton kernels of
  :mod:`~fcvit_mm.models.backbones.fcvit_triton` when Triton is
  importable, else the same math in PyTorch ops);
* ``'standard'``: the channels-last formulation with standard
  differentiable aten ops only, no in-place update of a result, no
  ``autograd.Function``, no batch chunks, so that every exporter knows each
  op and a compiler sees one graph (the decision for a fast path on a
  device without tuned kernels, or set by hand for an export).

The module decides its set once per state (:func:`decide_kernels`: from its
``fast_path`` and its parameters' device, at construction and on every
``.to()``). One rule is applied per call, here only
(:func:`running_kernels`): a module whose set is ``'cpu'`` or ``'cuda'``
runs the ``'standard'`` kernels while it is compiled (``torch.compile``),
exported (``torch.export``, ONNX) or traced (``torch.jit.trace``). The
kernel functions take the module's set (``kernels=``) and apply that rule;
inside a set, what genuinely varies per call (the dtype, the autograd
state, autocast) is decided by the kernel lines, and every branch computes
the same function.

Measurement hook: :class:`KernelRecorder` is a context manager that records
every :func:`linear` and :func:`depthwise_conv` call (shapes, and whether
the fused inference kernels ran), e.g. for the kernel floor of
``tools/analysis/kernel_floor.py``.
"""
from typing import (Iterator, List, NamedTuple, Optional, Sequence, Tuple,
                    Union)

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fcvit_triton

#: Upper bound (bytes) of a chunk of the channel mixer's hidden tensor (CPU).
CHUNK_BYTES = 16 << 20
#: Depthwise kernels from this size on use the FFT weight gradient on CPU.
FFT_GRAD_MIN_KERNEL = 7
#: Whether this PyTorch build has oneDNN (asked once: the call inside a
#: forward would break ``torch.compile``'s graph).
MKLDNN_AVAILABLE = torch.backends.mkldnn.is_available()


# ---------------------------------------------------------------------- #
# kernel choice
# ---------------------------------------------------------------------- #
#: The kernel sets a module can hold (see the module docstring).
KERNELS = ('plain', 'onnx', 'cpu', 'cuda', 'standard')
#: The sets of the channels-last formulation; the others run the plain one.
CHANNELS_LAST_KERNELS = ('cpu', 'cuda', 'standard')


def is_traced() -> bool:
    """Whether the running forward is being compiled (``torch.compile``),
    exported (``torch.export``, ONNX) or traced (``torch.jit.trace``)."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export())


def device_kernels(device: Union[str, torch.device]) -> str:
    """The channels-last kernel set for parameters on ``device``: ``'cpu'``,
    ``'cuda'``, or ``'standard'`` on any other device (no kernels tuned
    for it)."""
    kind = torch.device(device).type
    return kind if kind in ('cpu', 'cuda') else 'standard'


def decide_kernels(fast_path: Union[bool, str],
                   device: Union[str, torch.device]) -> str:
    """The kernel set of a module with this ``fast_path`` whose parameters
    are on ``device``.

    ``False``: ``'plain'``. ``True``: the channels-last formulation with
    the device's kernels (:func:`device_kernels`). ``'auto'``:

    * CPU, any dtype: ``'cpu'`` (measured: 3.4x / 2.6x the plain path's
      throughput in inference / training, float32);
    * CUDA, any dtype: ``'plain'`` (measured on an H100, batch 64: the
      channels-last formulation at 0.59x / 0.82x the plain path's
      throughput under bf16 autocast, 0.38x / 0.52x in float32, inference
      / training). ``fast_path=True`` runs the channels-last formulation
      with the ``'cuda'`` kernels (cuDNN's NHWC depthwise kernels, the
      Triton one-group GroupNorm); the GPU check script
      (``tools/analysis/gpu_check.py``) times both, and this line changes
      when the CUDA formulation wins there;
    * any other device: ``'plain'`` (no kernels tuned for it).
    """
    if fast_path == 'auto':
        return 'cpu' if torch.device(device).type == 'cpu' else 'plain'
    return device_kernels(device) if fast_path else 'plain'


def running_kernels(kernels: str) -> str:
    """The kernel set that runs now for a module whose set is ``kernels``:
    ``'standard'`` in place of ``'cpu'`` or ``'cuda'`` while the forward is
    compiled, exported or traced (:func:`is_traced`), else ``kernels``.
    The one place where tracing changes the kernels."""
    if kernels in ('cpu', 'cuda') and is_traced():
        return 'standard'
    return kernels


# ---------------------------------------------------------------------- #
# recording
# ---------------------------------------------------------------------- #
class KernelCall(NamedTuple):
    """One recorded kernel call.

    ``kind`` is ``'gemm'`` (``shape`` = ``(M, K, N)``: an ``(M, K)`` input
    times a ``(K, N)`` weight) or ``'depthwise'`` (``shape`` = the input's
    NCHW shape, ``conv`` the ``nn.Conv2d``, ``gelu`` whether a GELU
    follows). ``fused``: oneDNN's / in-place inference kernels ran.
    """
    kind: str
    shape: Tuple[int, ...]
    fused: bool
    conv: Optional[nn.Conv2d] = None
    gelu: bool = False


_RECORDERS: List['KernelRecorder'] = []


class KernelRecorder:
    """Records the fast path's kernel calls while active::

        with KernelRecorder() as rec:
            model(x)
        rec.gemms      # [(M, K, N), ...] in call order
        rec.depthwise  # [(input shape, conv, gelu), ...]
        rec.calls      # every KernelCall, in order

    Recorders nest; each sees every call made while it is active. The
    kernels themselves run unchanged.
    """

    def __init__(self):
        self.calls: List[KernelCall] = []

    def __enter__(self) -> 'KernelRecorder':
        _RECORDERS.append(self)
        return self

    def __exit__(self, *exc):
        _RECORDERS.remove(self)
        return False

    @property
    def gemms(self) -> List[Tuple[int, int, int]]:
        return [c.shape for c in self.calls if c.kind == 'gemm']

    @property
    def depthwise(self) -> List[tuple]:
        return [(c.shape, c.conv, c.gelu) for c in self.calls
                if c.kind == 'depthwise']


def _record(call: KernelCall):
    for rec in _RECORDERS:
        rec.calls.append(call)


# ---------------------------------------------------------------------- #
# layout
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


def mkldnn_fusable(x: torch.Tensor, *params: Optional[torch.Tensor],
                   kernels: str) -> bool:
    """Whether oneDNN's fused inference kernels may run: the ``'cpu'``
    kernels running (``kernels``: the set that runs,
    :func:`running_kernels`), float32, nothing to differentiate, no
    autocast."""
    if (kernels != 'cpu' or not MKLDNN_AVAILABLE
            or x.dtype != torch.float32):
        return False
    if torch.is_autocast_enabled('cpu'):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(
            p is not None and p.requires_grad for p in params)):
        return False
    return True


# ---------------------------------------------------------------------- #
# 1x1 convolution
# ---------------------------------------------------------------------- #
def linear(x: torch.Tensor,
           weight: torch.Tensor,
           bias: Optional[torch.Tensor],
           gelu: bool = False,
           residual: Optional[torch.Tensor] = None,
           *,
           kernels: str) -> torch.Tensor:
    """``[residual +] [gelu](x @ weight.T + bias)`` on the last dim of an
    NHWC tensor (``gelu`` and ``residual`` are exclusive) with the
    module's kernel set ``kernels``."""
    if gelu and residual is not None:
        raise ValueError('linear: gelu and residual are exclusive')
    fused = mkldnn_fusable(x, weight, bias, kernels=running_kernels(kernels))
    if _RECORDERS and not is_traced():
        _record(KernelCall('gemm', (x.numel() // x.shape[-1],
                                    weight.shape[1], weight.shape[0]), fused))
    y = F.linear(x, weight, bias)
    if fused:
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
                              kernel_size: Sequence[int],
                              padding: Sequence[int]) -> torch.Tensor:
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
    H, W = x.shape[-2:]
    if grad_out.shape != x.shape:
        raise ValueError('depthwise_weight_grad_fft needs a same-size '
                         f'convolution, got input {tuple(x.shape)} and '
                         f'output gradient {tuple(grad_out.shape)}')
    P = _fft_size(H + max(ph, kh - 1 - ph))
    Q = _fft_size(W + max(pw, kw - 1 - pw))
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) \
        else torch.float32

    def spectrum(t: torch.Tensor) -> torch.Tensor:
        # one pass from any layout and dtype into the zero-padded NCHW
        # buffer of the transform (rfft2's own padding would be a second)
        buf = t.new_zeros((*t.shape[:2], P, Q), dtype=dtype)
        buf[:, :, :H, :W] = t
        return torch.fft.rfft2(buf)

    X = spectrum(x)
    X.mul_(spectrum(grad_out).conj_physical_())  # in place: no third copy
    corr = torch.fft.irfft2(X.sum(0), s=(P, Q))  # C, P, Q
    rows = torch.arange(-ph, kh - ph, device=x.device) % P
    cols = torch.arange(-pw, kw - pw, device=x.device) % Q
    out = corr.index_select(1, rows).index_select(2, cols)
    return out.to(x.dtype).unsqueeze(1)


class DepthwiseConvFFTGrad(torch.autograd.Function):
    """Depthwise conv (stride 1, no dilation): forward and input gradient by
    the usual kernels, weight gradient by :func:`depthwise_weight_grad_fft`.

    ``DepthwiseConvFFTGrad.apply(x, weight, bias, padding)``.

    Under CPU autocast the convolution runs in the autocast dtype (as
    ``nn.Conv2d`` would: bf16, on oneDNN's channels-last kernels), the
    input gradient too, and the weight and bias gradients are summed in
    float32 and returned in the weights' dtype (oneDNN's bf16
    backward-weights pass of an 11x11 depthwise convolution is slower than
    its float32 one).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.padding = padding
        ctx.has_bias = bias is not None
        ctx.weight_dtype = weight.dtype
        if torch.is_autocast_enabled('cpu'):
            dtype = torch.get_autocast_dtype('cpu')
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        ctx.save_for_backward(x, weight)
        with torch.autocast('cpu', enabled=False):
            return F.conv2d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], list(ctx.padding), [1, 1],
                False, [0, 0], x.shape[1], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad_fft(
                x, grad, weight.shape[-2:],
                ctx.padding).to(ctx.weight_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # summed in float32 at least
            grad_b = grad.sum((0, 2, 3), dtype=torch.promote_types(
                grad.dtype, torch.float32)).to(ctx.weight_dtype)
        return grad_x, grad_w, grad_b, None


def _fft_grad_applies(x: torch.Tensor, conv: nn.Conv2d, kernels: str) -> bool:
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or conv.weight.requires_grad)
    return (needs_grad and kernels == 'cpu'
            and x.dtype in (torch.float32, torch.float64, torch.bfloat16)
            and min(conv.kernel_size) >= FFT_GRAD_MIN_KERNEL
            and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1))


def depthwise_conv(x: torch.Tensor, conv: nn.Conv2d, gelu: bool = False,
                   *, kernels: str) -> torch.Tensor:
    """``[gelu](conv(x))`` for a depthwise ``nn.Conv2d`` on a channels-last
    tensor with the module's kernel set ``kernels``; returns
    channels-last."""
    pad = tuple(conv.padding)
    kernels = running_kernels(kernels)
    fused = mkldnn_fusable(x, conv.weight, conv.bias, kernels=kernels)
    if _RECORDERS and not is_traced():
        _record(KernelCall('depthwise', tuple(x.shape), fused, conv, gelu))
    if fused:
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, list(pad), [1, 1], [1, 1],
            conv.groups, 'gelu' if gelu else 'none', [],
            'none' if gelu else None)
    if _fft_grad_applies(x, conv, kernels):
        y = DepthwiseConvFFTGrad.apply(x, conv.weight, conv.bias, pad)
    else:
        y = conv(x)
    if not y.is_contiguous(memory_format=torch.channels_last):
        y = to_channels_last(y)
    return F.gelu(y) if gelu else y


# ---------------------------------------------------------------------- #
# norms and batch chunks
# ---------------------------------------------------------------------- #
def group_norm(x: torch.Tensor, num_groups: int,
               weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
               eps: float, *, kernels: str) -> torch.Tensor:
    """``F.group_norm`` on a channels-last tensor, returned channels-last.

    With the ``'cuda'`` kernels one group is :func:`group_norm1_nhwc` on the
    NHWC view (CUDA's GroupNorm kernels make a channels-last input
    contiguous, forward and backward)."""
    if num_groups == 1 and running_kernels(kernels) == 'cuda':
        return nchw(group_norm1_nhwc(nhwc(x), weight, bias, eps))
    y = F.group_norm(x, num_groups, weight, bias, eps)
    if not y.is_contiguous(memory_format=torch.channels_last):
        y = to_channels_last(y)
    return y


class _OnnxGroupNorm1(torch.autograd.Function):
    """A one-group GroupNorm with a per-channel affine that the ONNX exporter
    writes as ONE ``LayerNormalization`` over every axis but the batch
    (``axis=1``; the scale and shift shaped ``(C, 1, ..., 1)`` to broadcast
    over the normalised axes). A one-group GroupNorm is exactly that
    LayerNorm: mean and biased variance over (C, H, W) per sample. Exported
    as ``nn.GroupNorm`` it would be a reshape, an InstanceNormalization, a
    reshape back and a Mul and an Add, whose reshapes take OpenVINO out of
    its blocked layouts (reorders were 10% of its time on the plain graph;
    the whole-model speed stayed within the runs' scatter, see
    docs/performance.md)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        return F.group_norm(x, 1, weight, bias, eps)

    @staticmethod
    def symbolic(g, x, weight, bias, eps):
        axes = g.op('Constant', value_t=torch.arange(1, x.type().dim() - 1))
        return g.op('LayerNormalization', x, g.op('Unsqueeze', weight, axes),
                    g.op('Unsqueeze', bias, axes), axis_i=1, epsilon_f=eps)


def group_norm1(x: torch.Tensor, norm: nn.GroupNorm, *,
                kernels: str) -> torch.Tensor:
    """``norm(x)`` for a one-group ``nn.GroupNorm`` (with or without
    affine) on an NCHW tensor of any memory layout: the module itself, but
    with the ``'onnx'`` kernels :class:`_OnnxGroupNorm1` (one
    ``LayerNormalization`` in an ONNX export; inference only: it has no
    backward)."""
    if kernels != 'onnx':
        return norm(x)
    weight = norm.weight if norm.affine else x.new_ones(norm.num_channels)
    bias = norm.bias if norm.affine else x.new_zeros(norm.num_channels)
    return _OnnxGroupNorm1.apply(x, weight, bias, norm.eps)


def normalize_nhwc(x: torch.Tensor, eps: float, *,
                   kernels: str) -> torch.Tensor:
    """A one-group GroupNorm without affine of an NHWC tensor ``x``: each
    sample standardised over all its elements (biased variance), with the
    module's kernel set ``kernels``."""
    kernels = running_kernels(kernels)
    if kernels == 'cuda':
        return group_norm1_nhwc(x, None, None, eps)
    if kernels == 'standard':
        # a LayerNorm's normalised shape would be the traced (dynamic) size
        # of the input, which ONNX's LayerNormalization cannot take
        return fcvit_triton.group_norm1_reference(x, None, None, eps)
    return F.layer_norm(x, x.shape[1:], eps=eps)


def group_norm1_nhwc(x: torch.Tensor, weight: Optional[torch.Tensor],
                     bias: Optional[torch.Tensor],
                     eps: float) -> torch.Tensor:
    """One-group GroupNorm of an NHWC tensor with float32 statistics and an
    output in ``x``'s dtype: the Triton kernel where it runs, else the same
    math in PyTorch ops (:func:`~fcvit_mm.models.backbones.fcvit_triton.
    group_norm1_reference`)."""
    if fcvit_triton.kernel_applies(x):
        return fcvit_triton.group_norm1(x, weight, bias, eps)
    return fcvit_triton.group_norm1_reference(x, weight, bias, eps)


def chunk_size(x: torch.Tensor, hidden: int, *, kernels: str) -> int:
    """Samples per chunk of an NHWC batch ``x`` whose per-sample hidden
    tensor has ``hidden`` channels (the whole batch but with the ``'cpu'``
    kernels running)."""
    B, H, W, _ = x.shape
    if running_kernels(kernels) != 'cpu':
        return B
    per_sample = H * W * hidden * x.element_size()
    return max(1, min(B, CHUNK_BYTES // max(per_sample, 1)))


def batch_chunks(x: torch.Tensor, hidden: int, *,
                 kernels: str) -> Iterator[torch.Tensor]:
    """The NHWC batch ``x`` in chunks of :func:`chunk_size` samples."""
    size = chunk_size(x, hidden, kernels=kernels)
    return iter(x.split(size) if size < x.shape[0] else (x, ))
