# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""FCViT: the Fully Convolutional Vision Transformer.

Paper: "A Close Look at Spatial Modeling: From Attention to Convolution",
Xu Ma, Huan Wang, Can Qin, Kunpeng Li, Xingchen Zhao, Jie Fu, Yun Fu, 2022
(https://arxiv.org/abs/2212.12552).

FCViT is a MetaFormer whose token mixer replaces self-attention by large
depthwise convolutions plus a "global context" that every position receives,
weighted by its similarity to the image's mean token. The network is
convolutional end to end: feature maps stay (B, C, H, W) tensors, no token
sequence is ever formed.

Each module below holds two formulations of its math side by side: the
plain one, an op-by-op transcription of the reference on NCHW tensors, and
the fast one, the same function computed on channels-last tensors with the
kernels of :mod:`fcvit_mm.models.backbones.fcvit_ops`.
``tests/test_fast_paths.py`` checks that both give the same outputs and
gradients. Inputs and outputs of :class:`FCViT` are ordinary NCHW tensors
either way.

Which code runs is one name held by every module, its ``kernels``
(:class:`FastPathMixin`), decided when the module's state changes (at
construction, on ``.to()`` / ``.cuda()`` / ``.half()`` / ..., on setting
``fast_path`` or ``kernels``), never per forward:

* ``'plain'``: the plain formulation;
* ``'onnx'``: the plain formulation with the one-group GroupNorms and the
  global context's addition in their ONNX forms (fewer ops, 4-D tensors
  only: ``fcvit_ops.group_norm1``, ``GlobalContext._add_onnx``), which
  ``fcvit_mm.deploy`` sets for its exports; inference only;
* ``'cpu'``, ``'cuda'``: the fast formulation with the CPU-tuned / the
  CUDA (cuDNN, Triton) kernels;
* ``'standard'``: the fast formulation with standard aten ops only (for
  exporters and compilers).

The constructor's ``fast_path`` (``'auto'``, True or False) and the
parameters' device decide it (:func:`fcvit_ops.decide_kernels
<fcvit_mm.models.backbones.fcvit_ops.decide_kernels>`: ``'auto'`` is
``'cpu'`` on CPU, ``'plain'`` on CUDA and other devices); ``'standard'``
and ``'onnx'`` are only ever set by hand (``model.kernels = 'onnx'``, or
:func:`using_kernels` for a ``with`` block). Whatever the set, a forward
that is compiled, exported or traced runs the ``'standard'`` kernels in
place of ``'cpu'`` and ``'cuda'`` (:func:`fcvit_ops.running_kernels
<fcvit_mm.models.backbones.fcvit_ops.running_kernels>`, the one per-call
rule). :meth:`FCViT.switch_to_deploy` gives the inference form that
``fcvit_mm.deploy`` exports (``tests/test_inference_form.py``).

The module tree is built from small pieces (``GlobalContext``,
``TokenMixer``, ``ChannelMixer``, ``FCViTBlock``, ``FCViTStage``) and keeps
the reference implementation's names inside a block, so that its published
checkpoints convert with a plain key renaming
(:func:`fcvit_mm.models.checkpoint.convert_reference_state_dict`), which a
``load_state_dict`` pre-hook applies whatever loads the model.
"""
import contextlib
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import (constant_init, normal_init,
                                        trunc_normal_init)
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from fcvit_mm.models.checkpoint import (fit_checkpoint, is_empty_pretrained,
                                        load_pretrained)
from . import fcvit_ops as ops

#: Number of heads ("groups") of the global-context module.
GC_HEADS = 8


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, as the reference uses everywhere."""
    return F.gelu(x)


class FastPathMixin:
    """The ``fast_path`` switch and the decided ``kernels`` (module
    docstring) of FCViT's modules with math of their own; a forward
    branches on ``kernels`` only (:attr:`channels_last`: the fast
    formulation).

    ``kernels`` is decided from ``fast_path`` and the parameters' device
    (:func:`~fcvit_mm.models.backbones.fcvit_ops.decide_kernels`) at
    construction, when ``fast_path`` is set, and after every ``.to()``,
    ``.cuda()``, ``.half()``, ... (``_apply``). Set by hand, ``'plain'`` is
    ``fast_path = False``, ``'cpu'`` / ``'cuda'`` are ``fast_path = True``
    (refused unless the parameters are on that device), and ``'standard'``
    / ``'onnx'`` hold over moves until ``fast_path`` is set, ``'onnx'``
    (its GroupNorm has no backward) also until ``.train()``. Setting either
    on a module sets it on every FCViT module inside.
    """
    _fast_path: Union[bool, str] = 'auto'
    #: the decided kernel set (:meth:`_decide_kernels`)
    _kernels: str = 'plain'
    #: ``'standard'`` or ``'onnx'`` when set by hand, else None
    _kernels_pinned: Optional[str] = None

    @property
    def fast_path(self) -> Union[bool, str]:
        return self._fast_path

    @fast_path.setter
    def fast_path(self, value: Union[bool, str]):
        value = parse_fast_path(value)
        for m in self._fcvit_modules():
            m._fast_path = value
            m._kernels_pinned = None
            m._decide_kernels()

    @property
    def kernels(self) -> str:
        """Which kernels run now (see the class doc); set it to choose."""
        return self._kernels

    @kernels.setter
    def kernels(self, value: str):
        if value not in ops.KERNELS:
            raise ValueError(f'kernels must be one of {ops.KERNELS}, got '
                             f'{value!r}')
        if value == 'plain':
            self.fast_path = False
            return
        if value in ('cpu', 'cuda'):
            device = self._param_device()
            if ops.device_kernels(device) != value:
                raise ValueError(
                    f"kernels={value!r} need the parameters on "
                    f"{value.upper()}; they are on {device}: move the "
                    f"model (.to()), or set fast_path=True")
            self.fast_path = True
            return
        for m in self._fcvit_modules():
            m._kernels_pinned = value
            m._decide_kernels()

    @property
    def channels_last(self) -> bool:
        """Whether the fast (channels-last) formulation runs."""
        return self._kernels in ops.CHANNELS_LAST_KERNELS

    def _fcvit_modules(self):
        return (m for m in self.modules() if isinstance(m, FastPathMixin))

    def _param_device(self) -> torch.device:
        p = next(self.parameters(), None)
        return torch.device('cpu') if p is None else p.device

    def _decide_kernels(self) -> None:
        """This module's ``kernels`` from its state (not its children's)."""
        self._kernels = self._kernels_pinned or ops.decide_kernels(
            self._fast_path, self._param_device())

    def _apply(self, fn, *args, **kwargs):
        result = super()._apply(fn, *args, **kwargs)
        self._decide_kernels()  # the parameters may have moved
        return result

    def train(self, mode: bool = True):
        result = super().train(mode)
        if mode and self._kernels_pinned == 'onnx':
            self._kernels_pinned = None
            self._decide_kernels()
        return result


def parse_fast_path(value) -> Union[bool, str]:
    """``True``, ``False`` or ``'auto'`` (any bool-like number is taken as a
    bool), or a ValueError naming the value."""
    if isinstance(value, str):
        if value.lower() == 'auto':
            return 'auto'
    elif isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"fast_path must be 'auto', True or False, got "
                     f'{value!r}')


@contextlib.contextmanager
def using_kernels(model: nn.Module, kernels: str) -> Iterator[nn.Module]:
    """Every FCViT module of ``model`` on ``kernels`` inside the ``with``
    block; each module's ``fast_path`` and ``kernels`` as they were after
    it (re-decided for the parameters' device then)::

        with using_kernels(model, 'plain'):
            model(x)
    """
    mods = [m for m in model.modules() if isinstance(m, FastPathMixin)]
    saved = [(m._fast_path, m._kernels_pinned) for m in mods]
    try:
        for m in mods:
            m.kernels = kernels
        yield model
    finally:
        for m, (fast_path, pinned) in zip(mods, saved):
            m._fast_path, m._kernels_pinned = fast_path, pinned
            m._decide_kernels()


def _head_block_diag(v: torch.Tensor, heads: int,
                     heads_last: bool) -> torch.Tensor:
    """(B, C) -> block-diagonal (B, C, heads) (``heads_last``) or
    (B, heads, C): head h's part of ``v`` in column / row h, zeros
    elsewhere."""
    B, C = v.shape
    eye = torch.eye(heads, dtype=v.dtype, device=v.device)
    if heads_last:
        return (v.view(B, heads, C // heads, 1) *
                eye.view(1, heads, 1, heads)).reshape(B, C, heads)
    return (v.view(B, 1, heads, C // heads) *
            eye.view(1, heads, heads, 1)).reshape(B, heads, C)


class GlobalContext(FastPathMixin, nn.Module):
    """FCViT's global context: the image's mean token, given to every position
    in proportion to the position's (normalised) similarity to it.

    For an input ``x`` of shape (B, C, H, W) with ``heads`` groups of
    ``c = C / heads`` channels:

    1. ``g`` = spatial mean of ``x`` (B, C);
    2. per head, token-to-global similarity ``s = <x_n, g> * c ** -0.5``;
    3. ``s`` is standardised over heads and positions together, per sample,
       with the unbiased standard deviation and ``eps`` added to the std;
    4. a per-head affine (``rescale_weight``, ``rescale_bias``);
    5. ``g`` goes through a bottleneck with a two-way maxout ("competition")
       between ``fc1`` and ``fc2``;
    6. output = ``s`` (per head) times the bottleneck output (per channel).

    ``forward`` returns only the context; :meth:`add_to` returns
    ``x + context`` (the token mixer's use). On the fast path the per-head
    products are batched matrix products with block-diagonal matrices of
    the mean token (step 2) and of the bottleneck output (step 6, fused
    with the addition), and the statistics of step 3 are taken in float32
    at least.
    """

    def __init__(self, dim: int, heads: int = GC_HEADS, eps: float = 1e-5):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f'GlobalContext: channels ({dim}) must be '
                             f'divisible by the number of heads ({heads})')
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.eps = eps
        hidden = dim // heads
        self.rescale_weight = nn.Parameter(torch.ones(heads))
        self.rescale_bias = nn.Parameter(torch.zeros(heads))
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self._decide_kernels()

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised token-to-global similarity, shape (B, heads, H, W).

        This is the map drawn in the paper's Figure 3.
        """
        B, C, H, W = x.shape
        g = x.mean(dim=(2, 3))
        return self._similarity(x, g).reshape(B, self.heads, H, W)

    def _similarity(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Scores (B, heads, H*W) of ``x`` against its mean token ``g``."""
        if self.channels_last:
            return self._similarity_fast(x, g)
        return self._similarity_plain(x, g)

    def _similarity_plain(self, x: torch.Tensor,
                          g: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        xh = x.reshape(B, self.heads, self.head_dim, H * W)
        gh = g.reshape(B, self.heads, 1, self.head_dim)
        s = torch.matmul(gh, xh).view(B, self.heads * H * W) * self.scale
        std, mean = torch.std_mean(s, dim=1, keepdim=True)  # unbiased std
        s = (s - mean) / (std + self.eps)
        s = s.view(B, self.heads, H * W)
        return (s * self.rescale_weight.view(1, -1, 1) +
                self.rescale_bias.view(1, -1, 1))

    def _similarity_fast(self, x: torch.Tensor,
                         g: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        xf = ops.nhwc(x).reshape(B, H * W, C)
        s = torch.bmm(xf, _head_block_diag(g, self.heads, True)) * self.scale
        dtype = s.dtype  # B, N, heads
        if dtype in (torch.float16, torch.bfloat16):
            s = s.float()
        std, mean = torch.std_mean(s.view(B, -1), dim=1, keepdim=True)
        s = (s - mean.unsqueeze(2)) / (std.unsqueeze(2) + self.eps)
        s = torch.addcmul(self.rescale_bias.to(s.dtype), s,
                          self.rescale_weight.to(s.dtype))
        return s.to(dtype).transpose(1, 2)

    def _bottleneck(self, g: torch.Tensor) -> torch.Tensor:
        """fc2(max over the two halves of fc1(g)): (B, C)."""
        u = self.fc1(g).view(g.shape[0], 2, -1).amax(dim=1)  # maxout
        return self.fc2(u)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self._add_fast(x, with_input=False)
        B, C, H, W = x.shape
        g = x.mean(dim=(2, 3))
        s = self._similarity(x, g)  # B, heads, N
        v = self._bottleneck(g).view(B, self.heads, self.head_dim, 1)
        return (s.unsqueeze(2) * v).view(B, C, H, W)

    def add_to(self, x: torch.Tensor) -> torch.Tensor:
        """``x + self(x)``; one fused product on the fast path (returned
        channels-last there); the ONNX form (:meth:`_add_onnx`) with the
        ``'onnx'`` kernels."""
        if self.channels_last:
            return self._add_fast(x, with_input=True)
        if self.kernels == 'onnx':
            return self._add_onnx(x)
        return x + self(x)

    def _add_onnx(self, x: torch.Tensor) -> torch.Tensor:
        """``x + context`` with 4-D (B, C, H, W) tensors only: the per-head
        sums of step 2 as a 1x1 convolution of ``x * g`` with a fixed
        (heads, C) block matrix, and step 6 as a 1x1 convolution of the
        scores with its transpose (each head's score repeated over its
        channels) times the bottleneck output. The plain form reshapes to
        (B, heads, c, H*W), which takes OpenVINO out of its blocked layouts
        (one reorder per reshape)."""
        _, C, H, W = x.shape
        blocks = torch.eye(self.heads, dtype=x.dtype, device=x.device)
        blocks = blocks.repeat_interleave(self.head_dim, dim=1)  # heads, C
        g = x.mean(dim=(2, 3), keepdim=True)
        s = F.conv2d(x * g, (blocks * self.scale).view(self.heads, C, 1, 1))
        s = s - s.mean(dim=(1, 2, 3), keepdim=True)
        n = self.heads * H * W
        std = ((s * s).sum(dim=(1, 2, 3), keepdim=True) / (n - 1)).sqrt()
        s = (s / (std + self.eps) * self.rescale_weight.view(1, -1, 1, 1) +
             self.rescale_bias.view(1, -1, 1, 1))
        v = self._bottleneck(g.flatten(1))[:, :, None, None]
        return x + F.conv2d(s, blocks.t().reshape(C, self.heads, 1, 1)) * v

    def _add_fast(self, x: torch.Tensor, with_input: bool) -> torch.Tensor:
        """``[x +] context``: the context ``s[b, h, n] * v[b, c in h]`` as
        one (b)addbmm of the (N, heads) scores with a block-diagonal
        (heads, C) matrix of ``v``."""
        B, C, H, W = x.shape
        xf = ops.nhwc(x).reshape(B, H * W, C)
        g = xf.mean(1)
        s = self._similarity(x, g).transpose(1, 2).to(xf.dtype)  # B, N, h
        v = _head_block_diag(self._bottleneck(g), self.heads,
                             False).to(xf.dtype)
        out = torch.baddbmm(xf, s, v) if with_input else torch.bmm(s, v)
        return ops.nchw(out.view(B, H, W, C))


def _pointwise_mlp(dim: int, hidden: int) -> nn.Sequential:
    """Conv1x1 -> GELU -> Conv1x1 (keys ``0`` and ``2`` as the reference)."""
    return nn.Sequential(
        nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))


class TokenMixer(FastPathMixin, nn.Module):
    """Two rounds of "add global context, then mix locally"::

        x = x + GC1(x);  x = GELU(F1(DW1(x)))
        x = x + GC2(x);  x = GELU(F2(DW2(x)))

    with 11x11 depthwise convolutions ``DW`` and pointwise bottleneck MLPs
    ``F`` of width ``max(dim // 8, 16)``. On the fast path the 1x1
    convolutions of ``F`` are matrix products on the NHWC view, each with
    its GELU.
    """

    def __init__(self, dim: int, kernel_size: int = 11):
        super().__init__()
        hidden = max(dim // 8, 16)
        pad = kernel_size // 2
        self.gc1 = GlobalContext(dim)
        self.dw1 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)
        self.fc1 = _pointwise_mlp(dim, hidden)
        self.gc2 = GlobalContext(dim)
        self.dw2 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)
        self.fc2 = _pointwise_mlp(dim, hidden)
        self._decide_kernels()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self._forward_fast(x)
        x = self.gc1.add_to(x)  # x + GC1(x)
        x = _gelu(self.fc1(self.dw1(x)))
        x = self.gc2.add_to(x)
        return _gelu(self.fc2(self.dw2(x)))

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernels
        x = self.gc1.add_to(x)
        x = self._mlp_fast(self.fc1, ops.depthwise_conv(x, self.dw1,
                                                        kernels=k))
        x = self.gc2.add_to(x)
        return self._mlp_fast(self.fc2, ops.depthwise_conv(x, self.dw2,
                                                           kernels=k))

    def _mlp_fast(self, mlp: nn.Sequential,
                  x: torch.Tensor) -> torch.Tensor:
        """``GELU(mlp(x))`` on a channels-last ``x``."""
        first, last = mlp[0], mlp[2]
        h = ops.linear(ops.nhwc(x), first.weight.flatten(1), first.bias,
                       gelu=True, kernels=self.kernels)
        return ops.nchw(ops.linear(h, last.weight.flatten(1), last.bias,
                                   gelu=True, kernels=self.kernels))


def _drop_path_active(drop_path: nn.Module) -> bool:
    return getattr(drop_path, 'drop_prob', 0.) > 0 and drop_path.training


class ChannelMixer(FastPathMixin, nn.Module):
    """MLP with a 3x3 depthwise convolution inside:
    Conv1x1 -> DWConv3x3 -> GELU -> Dropout -> Conv1x1 -> Dropout.

    The fast formulation (:meth:`forward_fast`) can also take the block's
    residual branch around it: the affine of the GroupNorm before it is
    folded into ``fc1`` (``W diag(a) x + W b + c``), the layer scale after
    it into ``fc2`` (``diag(ls) W h + ls c``), both on the parameters (so
    autograd gives the same gradients), the residual add fused into the last
    product, and on CPU the batch runs in chunks
    (:func:`~fcvit_mm.models.backbones.fcvit_ops.batch_chunks`).
    """

    def __init__(self, dim: int, mlp_ratio: float, drop: float = 0.):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)
        self._decide_kernels()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self.forward_fast(x)
        x = self.drop(_gelu(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))

    def _folded_weights(self, norm: Optional[nn.GroupNorm],
                        scale: Optional[torch.Tensor]):
        """(w1, b1, w2, b2) of the two products with ``norm``'s affine and
        ``scale`` folded in (each where present)."""
        hidden, dim = self.fc1.out_channels, self.fc1.in_channels
        w1, b1 = self.fc1.weight.view(hidden, dim), self.fc1.bias
        if norm is not None and norm.affine:
            # a matrix-vector product every exporter knows (ONNX has no
            # addmv)
            b1 = b1 + torch.matmul(w1, norm.bias)
            w1 = w1 * norm.weight
        w2, b2 = self.fc2.weight.view(dim, hidden), self.fc2.bias
        if scale is not None:
            w2 = w2 * scale.view(dim, 1)
            b2 = b2 * scale
        return w1, b1, w2, b2

    @torch.no_grad()
    def fold_(self, norm: nn.GroupNorm, scale: torch.Tensor) -> None:
        """Fold, in place, the affine of ``norm`` (the GroupNorm before
        this mixer) into ``fc1`` and ``scale`` (the layer scale after it)
        into ``fc2``: the parameters of :meth:`_folded_weights`, computed
        once."""
        w1, b1, w2, b2 = self._folded_weights(norm, scale)
        self.fc1.weight.copy_(w1.view_as(self.fc1.weight))
        self.fc1.bias.copy_(b1)
        self.fc2.weight.copy_(w2.view_as(self.fc2.weight))
        self.fc2.bias.copy_(b2)

    def forward_fast(self,
                     x: torch.Tensor,
                     norm: Optional[nn.GroupNorm] = None,
                     scale: Optional[torch.Tensor] = None,
                     drop_path: Optional[nn.Module] = None,
                     residual: bool = False) -> torch.Tensor:
        """``[x +] [drop_path]([scale *] self([norm](x)))`` on the fast path
        (``norm``: a one-group GroupNorm), returned channels-last."""
        w1, b1, w2, b2 = self._folded_weights(norm, scale)
        path_active = drop_path is not None and _drop_path_active(drop_path)
        drop_active = self.drop.p > 0 and self.drop.training
        add_in_chunk = residual and not path_active
        k = self.kernels
        xl = ops.nhwc(x)
        outs = []
        for xc in ops.batch_chunks(xl, self.fc1.out_channels, kernels=k):
            if norm is not None:
                xc_in = ops.normalize_nhwc(xc, norm.eps, kernels=k)
            else:
                xc_in = xc
            h = ops.nhwc(ops.depthwise_conv(
                ops.nchw(ops.linear(xc_in, w1, b1, kernels=k)), self.dwconv,
                gelu=True, kernels=k))
            if drop_active:
                y = self.drop(ops.linear(self.drop(h), w2, b2, kernels=k))
                outs.append(xc + y if add_in_chunk else y)
            else:
                outs.append(ops.linear(
                    h, w2, b2, residual=xc if add_in_chunk else None,
                    kernels=k))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        if path_active:
            out = drop_path(out)
            if residual:
                out = xl + out
        return ops.nchw(out)


class FCViTBlock(FastPathMixin, nn.Module):
    """Pre-norm MetaFormer block with layer scale::

        x = x + DropPath(ls1 * TokenMixer(GN1(x)))
        x = x + DropPath(ls2 * ChannelMixer(GN2(x)))

    GN is a GroupNorm with one group. The fast formulation runs on (and
    returns) channels-last tensors; the second residual branch is
    :meth:`ChannelMixer.forward_fast` with GN2 and ls2 folded in.

    :meth:`switch_to_deploy` turns a trained block into its inference form,
    the same function with fewer operations: GN2's affine and ls2 folded
    into the channel mixer's 1x1 convolutions once (GN2 then has no affine,
    ``layer_scale_2`` is None), so that the second branch ends in a
    convolution whose residual add the runtimes fuse into it.
    """

    def __init__(self,
                 dim: int,
                 mlp_ratio: float,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.GroupNorm(1, dim)
        self.token_mixer = TokenMixer(dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.channel_mixer = ChannelMixer(dim, mlp_ratio, drop_rate)
        self.layer_scale_1 = nn.Parameter(
            torch.full((dim, ), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(
            torch.full((dim, ), float(layer_scale_init_value)))
        self.drop_path = (
            DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity())
        self._decide_kernels()

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """The inference form (see the class doc); exact up to float
        rounding. Irreversible: load weights before switching."""
        if self.layer_scale_2 is None:
            return
        self.channel_mixer.fold_(self.norm2, self.layer_scale_2)
        self.norm2 = nn.GroupNorm(1, self.norm2.num_channels,
                                  eps=self.norm2.eps, affine=False)
        self.layer_scale_2 = None

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernels
        x = x + self.drop_path(
            self.layer_scale_1.view(1, -1, 1, 1) *
            self.token_mixer(ops.group_norm1(x, self.norm1, kernels=k)))
        y = self.channel_mixer(ops.group_norm1(x, self.norm2, kernels=k))
        if self.layer_scale_2 is not None:  # None: folded into the mixer
            y = self.layer_scale_2.view(1, -1, 1, 1) * y
        return x + self.drop_path(y)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        x = ops.to_channels_last(x)
        n1 = self.norm1
        t = self.token_mixer(
            ops.group_norm(x, n1.num_groups, n1.weight, n1.bias, n1.eps,
                           kernels=self.kernels))
        ls = self.layer_scale_1.view(1, -1, 1, 1)
        if _drop_path_active(self.drop_path):
            x = x + self.drop_path(ls * t)
        else:
            x = torch.addcmul(x, t, ls)
        return self.channel_mixer.forward_fast(
            x, norm=self.norm2, scale=self.layer_scale_2,
            drop_path=self.drop_path, residual=True)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self._forward_fast(x)
        return self._forward_plain(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class ConvNormDownsample(nn.Module):
    """Conv2d (with bias) followed by a norm layer (BatchNorm by default).

    Used for the stem (7x7, stride 4) and between stages (3x3, stride 2).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int, padding: int, norm_cfg: dict):
        super().__init__()
        self.proj = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class FCViTStage(nn.Module):
    """An optional downsampling layer followed by a sequence of blocks."""

    def __init__(self, downsample: Optional[nn.Module],
                 blocks: Sequence[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


@MODELS.register_module()
class FCViT(FastPathMixin, BaseModule):
    """FCViT backbone.

    A PyTorch/OpenMMLab implementation of
    `A Close Look at Spatial Modeling: From Attention to Convolution
    <https://arxiv.org/abs/2212.12552>`_, numerically equal to the authors'
    reference model (its ImageNet checkpoints load as they are).

    Args:
        arch (str | dict): ``'tiny'``, ``'b12'``, ``'b24'``, ``'b48'``, or a
            dict with keys ``layers`` (blocks per stage), ``embed_dims``
            (widths) and ``mlp_ratios``, four entries each.
            Defaults to ``'b12'``.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (Sequence[int] | int): Stages whose (GroupNorm-normed)
            outputs are returned, any subset of 0..3, negatives counted from
            the end. Strides are 4, 8, 16, 32. Only the output norms of the
            requested stages are created. For classification use ``(3, )``:
            that norm plays the reference's final norm.
            Defaults to ``(0, 1, 2, 3)``.
        frozen_stages (int): -1 freezes nothing; 0 freezes the stem; k >= 1
            freezes the stem and stages 0..k-1 (with their downsampling and
            output norms). Frozen parts stay in eval mode with
            ``requires_grad=False``. Defaults to -1.
        norm_eval (bool): Keep the BatchNorm layers (stem and downsampling)
            in eval mode during training. Defaults to False.
        drop_rate (float): Dropout in the channel mixers. Defaults to 0.
        drop_path_rate (float): Stochastic depth, growing linearly from 0 at
            the first block to this value at the last. Defaults to 0.
        layer_scale_init_value (float): Initial layer scale; the reference
            uses 1e-5 for classification, 1e-6 for dense prediction.
            Defaults to 1e-6.
        norm_cfg (dict): Norm of the stem and downsampling layers.
            Defaults to ``dict(type='BN')``.
        with_cp (bool): Activation checkpointing per block (saves memory,
            same results). Defaults to False.
        fast_path (bool | str): The policy that decides :attr:`kernels`
            with the parameters' device: ``'auto'`` runs the fast
            formulation (channels-last tensors) with the CPU-tuned kernels
            on CPU, the plain one on CUDA and every other device, in any
            dtype; True the fast formulation with the device's kernels
            (``'cpu'``, ``'cuda'``, else ``'standard'``); False the plain
            op-by-op transcription of the reference, whatever the input's
            memory layout. Same math either way; inputs and outputs stay
            ordinary NCHW tensors. Can also be switched on a built model
            (or a single block) through the ``fast_path`` attribute.
            Defaults to ``'auto'``.
        init_cfg (dict | list[dict], optional): Initialisation config. A
            ``Pretrained`` entry accepts this project's checkpoints (with
            ``prefix``) and the reference's checkpoints as published.

    Attributes:
        kernels (str): Which kernels run now, decided from ``fast_path`` and
            the parameters' device at construction and after every
            ``.to()`` / ``.cuda()`` / ``.cpu()`` / ``.half()`` (never per
            forward): ``'plain'`` (the plain formulation, NCHW),
            ``'onnx'`` (the plain formulation with the ONNX forms of the
            one-group GroupNorms and of the global context's addition;
            inference only; ``fcvit_mm.deploy`` sets it for its exports),
            ``'cpu'`` / ``'cuda'`` (the fast formulation with the CPU-tuned
            / CUDA kernels), ``'standard'`` (the fast formulation with
            standard aten ops only). Settable like ``fast_path``, on the
            whole model or one block (:class:`FastPathMixin`). A compiled,
            exported or traced forward runs ``'standard'`` in place of
            ``'cpu'`` / ``'cuda'``.
    """

    arch_settings: Dict[str, dict] = {
        'tiny': dict(layers=[3, 3, 5, 2], embed_dims=[32, 64, 160, 320],
                     mlp_ratios=[8, 8, 4, 4]),
        'b12': dict(layers=[2, 2, 6, 2], embed_dims=[64, 128, 320, 512],
                    mlp_ratios=[8, 8, 4, 4]),
        'b24': dict(layers=[4, 4, 12, 4], embed_dims=[64, 128, 320, 512],
                    mlp_ratios=[8, 8, 4, 4]),
        'b48': dict(layers=[8, 8, 24, 8], embed_dims=[64, 128, 320, 512],
                    mlp_ratios=[8, 8, 4, 4]),
    }
    arch_keys = ('layers', 'embed_dims', 'mlp_ratios')
    num_stages = 4
    #: smallest input side (pixels) the backbone accepts
    min_size = 32

    def __init__(self,
                 arch: Union[str, dict] = 'b12',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 norm_cfg: dict = dict(type='BN'),
                 with_cp: bool = False,
                 fast_path: Union[bool, str] = 'auto',
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg)
        arch = self.parse_arch(arch)
        self.arch = arch
        self.in_channels = in_channels
        self.layers = list(arch['layers'])
        self.embed_dims = list(arch['embed_dims'])
        self.mlp_ratios = list(arch['mlp_ratios'])
        self.out_indices = self.parse_out_indices(out_indices)
        if not isinstance(frozen_stages, int) or not (
                -1 <= frozen_stages <= self.num_stages):
            raise ValueError(f'frozen_stages must be an int in '
                             f'[-1, {self.num_stages}], got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        self.patch_embed = ConvNormDownsample(
            in_channels, self.embed_dims[0], 7, 4, 3, norm_cfg)

        total = sum(self.layers)
        dpr = torch.linspace(0, drop_path_rate, total).tolist()
        self.stages = nn.ModuleList()
        k = 0
        for i, (depth, dim, ratio) in enumerate(
                zip(self.layers, self.embed_dims, self.mlp_ratios)):
            downsample = None if i == 0 else ConvNormDownsample(
                self.embed_dims[i - 1], dim, 3, 2, 1, norm_cfg)
            blocks = [
                FCViTBlock(
                    dim,
                    ratio,
                    drop_rate=drop_rate,
                    drop_path_rate=dpr[k + j],
                    layer_scale_init_value=layer_scale_init_value,
                    with_cp=with_cp) for j in range(depth)
            ]
            k += depth
            self.stages.append(FCViTStage(downsample, blocks))

        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.GroupNorm(1, self.embed_dims[i]))

        self.fast_path = fast_path
        self.deploy = False  # switch_to_deploy() sets it
        self._freeze_stages()
        # whatever loads a checkpoint: reference keys renamed, misfits refused
        self.register_load_state_dict_pre_hook(fit_checkpoint)

    # ------------------------------------------------------------------ #
    # argument checking
    # ------------------------------------------------------------------ #
    @classmethod
    def parse_arch(cls, arch: Union[str, dict]) -> dict:
        """Resolve ``arch`` to a dict of four-entry lists, or raise."""
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_settings:
                raise ValueError(
                    f'Unknown FCViT arch {arch!r}; valid names are '
                    f'{sorted(cls.arch_settings)}, or a dict with keys '
                    f'{list(cls.arch_keys)}')
            return {
                k: list(v)
                for k, v in cls.arch_settings[arch.lower()].items()
            }
        if not isinstance(arch, dict):
            raise TypeError(f'FCViT arch must be a str or a dict, got '
                            f'{type(arch).__name__}')
        missing = [k for k in cls.arch_keys if k not in arch]
        if missing:
            raise KeyError(f'FCViT arch dict is missing {missing}; it needs '
                           f'the keys {list(cls.arch_keys)}')
        extra = sorted(set(arch) - set(cls.arch_keys))
        if extra:
            raise KeyError(f'FCViT arch dict has unknown keys {extra}; valid '
                           f'keys are {list(cls.arch_keys)}')
        out = {}
        for key in cls.arch_keys:
            value = arch[key]
            if (not isinstance(value, (list, tuple))
                    or len(value) != cls.num_stages):
                raise ValueError(
                    f'FCViT arch[{key!r}] must be a list of '
                    f'{cls.num_stages} numbers, got {value!r}')
            if any((not isinstance(v, (int, float))) or v <= 0
                   for v in value):
                raise ValueError(f'FCViT arch[{key!r}] must hold positive '
                                 f'numbers, got {value!r}')
            out[key] = list(value)
        for d in out['embed_dims']:
            if int(d) != d or d % GC_HEADS:
                raise ValueError(
                    f'FCViT arch embed_dims must be integers divisible by '
                    f'{GC_HEADS} (the global-context heads), got '
                    f'{out["embed_dims"]}')
        if any(int(n) != n for n in out['layers']):
            raise ValueError(
                f'FCViT arch layers must be integers, got {out["layers"]}')
        return out

    @classmethod
    def parse_out_indices(cls, out_indices) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, (list, tuple)) or not out_indices:
            raise ValueError(f'out_indices must be a non-empty int sequence, '
                             f'got {out_indices!r}')
        result = []
        for i in out_indices:
            if not isinstance(i, int) or not (
                    -cls.num_stages <= i < cls.num_stages):
                raise ValueError(
                    f'out_indices entry {i!r} is out of range: FCViT has '
                    f'{cls.num_stages} stages, valid indices are 0..'
                    f'{cls.num_stages - 1} (or -{cls.num_stages}..-1)')
            i = i % cls.num_stages
            if i in result:
                raise ValueError(f'out_indices {out_indices!r} names stage '
                                 f'{i} twice')
            result.append(i)
        return tuple(sorted(result))

    # ------------------------------------------------------------------ #
    # weights
    # ------------------------------------------------------------------ #
    def init_weights(self):
        init_cfg = self.init_cfg
        if is_empty_pretrained(init_cfg):
            MMLogger.get_current_instance().warning(
                'FCViT: init_cfg names no pretrained checkpoint '
                '(checkpoint=None): the backbone starts from scratch (unless '
                'load_from / --resume loads a whole model over it). Set one '
                'with --cfg-options model.backbone.init_cfg.checkpoint=PATH')
            init_cfg = None
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            load_pretrained(
                self,
                init_cfg['checkpoint'],
                prefix=init_cfg.get('prefix'),
                map_location=init_cfg.get('map_location', 'cpu'),
                logger=MMLogger.get_current_instance())
            self._is_init = True
            return
        if init_cfg is None:
            self._init_from_scratch()
            self._is_init = True
            return
        super().init_weights()

    def _init_from_scratch(self):
        """The reference's initialisation for training from scratch."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = (m.kernel_size[0] * m.kernel_size[1] *
                           m.out_channels // m.groups)
                normal_init(m, mean=0., std=(2.0 / fan_out)**0.5, bias=0.)
            elif isinstance(m, nn.Linear):
                trunc_normal_init(m, std=.02, bias=0.)
            elif isinstance(m, (nn.GroupNorm, _BatchNorm)):
                constant_init(m, 1, bias=0)

    # ------------------------------------------------------------------ #
    # forward
    # ------------------------------------------------------------------ #
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4:
            raise ValueError(f'FCViT expects an NCHW batch (B, C, H, W: 4 '
                             f'dims), got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'FCViT was built for {self.in_channels} channels'
                             f', got an input with {x.shape[1]}')
        if x.shape[2] < self.min_size or x.shape[3] < self.min_size:
            raise ValueError(
                f'FCViT needs inputs of at least {self.min_size} x '
                f'{self.min_size} pixels (four stages, total stride 32), got '
                f'{x.shape[2]} x {x.shape[3]}')
        # fast path: channels-last inside; the plain path takes the input as
        # it comes; the outputs are ordinary (contiguous) NCHW tensors
        fast, k = self.channels_last, self.kernels
        if fast:
            x = ops.to_channels_last(x)
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                out = ops.group_norm(x, norm.num_groups, norm.weight,
                                     norm.bias, norm.eps, kernels=k) \
                    if fast else ops.group_norm1(x, norm, kernels=k)
                outs.append(out.contiguous())
            if i == self.out_indices[-1]:
                break
        return tuple(outs)

    # ------------------------------------------------------------------ #
    # training-mode behaviour
    # ------------------------------------------------------------------ #
    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.patch_embed
        for i in range(self.frozen_stages):
            yield self.stages[i]
            if i in self.out_indices:
                yield getattr(self, f'norm{i}')

    def _freeze_stages(self):
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def switch_to_deploy(self) -> None:
        """Switch every block to its inference form
        (:meth:`FCViTBlock.switch_to_deploy`): the same function, exact up
        to float rounding, with GN2's affine and the second layer scale
        folded into the channel mixers' convolutions. As mmpretrain's
        re-parameterisable backbones do it: load the weights first, then
        switch (a switched model no longer takes training checkpoints);
        ``fcvit_mm.deploy.export_model`` switches the models it exports.
        """
        for m in self.modules():
            if isinstance(m, FCViTBlock):
                m.switch_to_deploy()
        self.deploy = True

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer id of a parameter, for layer-wise learning-rate decay.

        The stem is layer 0, the k-th block of the network (counting from 0
        over all stages) is layer k + 1, a downsampling layer shares the id
        of the block after it, the output norms follow the last block, and
        anything outside the backbone (the head) comes last.

        Returns:
            tuple[int, int]: The layer id and the number of layers, as
            mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` expects.
        """
        total = sum(self.layers)
        num_layers = total + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        parts = name.split('.')
        if parts[0] == 'patch_embed':
            layer_id = 0
        elif parts[0] == 'stages':
            stage_id = int(parts[1])
            first = sum(self.layers[:stage_id])
            if parts[2] == 'blocks':
                layer_id = first + int(parts[3]) + 1
            else:
                layer_id = first + 1
        else:  # output norms
            layer_id = total + 1
        return layer_id, num_layers
