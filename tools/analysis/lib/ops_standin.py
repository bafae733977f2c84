# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""A torchvision-backed stand-in for the few compiled ``mmcv.ops`` that
Mask R-CNN, RetinaNet and Semantic FPN need, for machines where mmcv is
installed without its compiled ops (``mmcv-lite``, or mmcv built with
``MMCV_WITH_OPS=0``).

Building mmcv's CUDA ops takes minutes (about 6 on 16 cores); the GPU check
(``tools/analysis/gpu_check.py``) cannot spend them. mmdet and mmseg import
their ops from ``mmcv.ops`` (``from mmcv.ops import batched_nms``,
``from mmcv import ops; getattr(ops, 'RoIAlign')``,
``from mmcv.ops.roi_align import roi_align``), and that package does not
import at all when its compiled extension is missing.
:func:`install_ops_standin` then registers a module of that name that
provides:

* ``nms`` and ``batched_nms`` (mmcv's signatures and return values: kept
  boxes with their scores as ``(k, 5)``, and the kept indices, highest score
  first) on :func:`torchvision.ops.nms`;
* ``roi_align`` and ``RoIAlign`` (``pool_mode='avg'``, ``aligned`` either
  way) on :func:`torchvision.ops.roi_align`, the route mmcv's own
  ``RoIAlign(use_torchvision=True)`` takes;
* ``sigmoid_focal_loss`` / ``SigmoidFocalLoss`` (mmcv's CUDA op for
  RetinaNet: class-index targets, ``num_classes`` meaning background,
  optional per-class weight) in plain PyTorch;
* mmcv's pure-PyTorch ops modules as they are (``point_sample``,
  ``merge_cells``, ...), loaded from mmcv's own files;
* for every other name, a placeholder that imports fine (so that
  ``import mmdet.models`` works) and raises a ``NotImplementedError``
  naming the op when it is used.

Nothing is replaced where mmcv's compiled ops import: the stand-in is a
fallback only. ``tests/test_gpu_check.py`` compares each op with mmcv's
compiled one on the CPU (same numbers for RoIAlign, same keep sets for the
NMS variants) and trains a Mask R-CNN iteration through the stand-in.
"""
import importlib
import os.path as osp
import sys
import types
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

#: the name of the registered module
MODULE = 'mmcv.ops'
#: mmcv's ops modules that are plain PyTorch (no compiled extension):
#: loaded from mmcv's own files when asked for
PURE_MODULES = ('point_sample', 'merge_cells', 'cc_attention',
                'corner_pool', 'conv2d_gradfix')
#: names of the pure modules that mmdet / mmseg import from ``mmcv.ops``
PURE_NAMES = {
    'point_sample': 'point_sample',
    'rel_roi_point_to_rel_img_point': 'point_sample',
    'bilinear_grid_sample': 'point_sample',
    'SimpleRoIAlign': 'point_sample',
    'ConcatCell': 'merge_cells',
    'SumCell': 'merge_cells',
    'GlobalPoolingCell': 'merge_cells',
}


def compiled_ops_available() -> bool:
    """Whether mmcv's own ``mmcv.ops`` (with its compiled extension)
    imports. False when mmcv is missing or is mmcv-lite, or when the
    stand-in is what ``mmcv.ops`` currently is."""
    mod = sys.modules.get(MODULE)
    if mod is not None:
        return not getattr(mod, 'IS_STANDIN', False)
    try:
        importlib.import_module(MODULE)
    except ImportError:
        return False
    return True


def is_installed() -> bool:
    """Whether the stand-in is what ``mmcv.ops`` currently is."""
    return getattr(sys.modules.get(MODULE), 'IS_STANDIN', False)


# ---------------------------------------------------------------------- #
# NMS
# ---------------------------------------------------------------------- #
def nms(boxes, scores, iou_threshold: float, offset: int = 0,
        score_threshold: float = 0, max_num: int = -1):
    """mmcv's ``nms``: ``(dets, inds)``, ``dets = [boxes | scores]`` of the
    kept boxes, highest score first; numpy in, numpy out."""
    from torchvision.ops import nms as tv_nms
    is_numpy = not isinstance(boxes, torch.Tensor)
    if is_numpy:
        boxes, scores = torch.from_numpy(boxes), torch.from_numpy(scores)
    if boxes.dim() != 2 or boxes.size(1) != 4 or \
            boxes.size(0) != scores.size(0):
        raise ValueError(f'nms: boxes must be (N, 4) and scores (N, ), got '
                         f'{tuple(boxes.shape)} and {tuple(scores.shape)}')
    if offset != 0:
        raise NotImplementedError(
            f'nms: offset={offset} is not supported by the torchvision-backed'
            ' stand-in for mmcv.ops (only offset=0)')
    inds = torch.arange(boxes.size(0), device=boxes.device)
    if score_threshold > 0:
        valid = scores > score_threshold
        boxes, scores, inds = boxes[valid], scores[valid], inds[valid]
    keep = tv_nms(boxes.float(), scores.float(), float(iou_threshold))
    if max_num > 0:
        keep = keep[:max_num]
    dets = torch.cat((boxes[keep], scores[keep].reshape(-1, 1)), dim=1)
    inds = inds[keep]
    if is_numpy:
        return dets.cpu().numpy(), inds.cpu().numpy()
    return dets, inds


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor,
                idxs: torch.Tensor, nms_cfg: Optional[dict],
                class_agnostic: bool = False):
    """mmcv's ``batched_nms``: NMS within each value of ``idxs`` (the
    classes), boxes of different classes shifted apart; ``nms_cfg`` as in
    mmdet's configs (``iou_threshold``, ``type='nms'``, ``split_thr``,
    ``class_agnostic``). ``nms_cfg=None``: every box is kept, sorted."""
    if nms_cfg is None:
        scores, inds = scores.sort(descending=True)
        return torch.cat([boxes[inds], scores[:, None]], -1), inds
    cfg = dict(nms_cfg)
    class_agnostic = cfg.pop('class_agnostic', class_agnostic)
    nms_type = cfg.pop('type', 'nms')
    if nms_type != 'nms':
        raise NotImplementedError(
            f'batched_nms: nms type {nms_type!r} is not provided by the '
            "torchvision-backed stand-in for mmcv.ops (only 'nms')")
    split_thr = cfg.pop('split_thr', 10000)
    if class_agnostic:
        boxes_for_nms = boxes
    else:
        # shift each class by more than the largest coordinate
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + boxes.new_tensor(1))
        boxes_for_nms = boxes + offsets[:, None]
    if boxes_for_nms.shape[0] < split_thr:
        _, keep = nms(boxes_for_nms, scores, **cfg)
    else:
        total = scores.new_zeros(scores.size(), dtype=torch.bool)
        for i in torch.unique(idxs):
            mask = (idxs == i).nonzero(as_tuple=False).view(-1)
            _, k = nms(boxes_for_nms[mask], scores[mask], **cfg)
            total[mask[k]] = True
        keep = total.nonzero(as_tuple=False).view(-1)
        keep = keep[scores[keep].argsort(descending=True)]
    return torch.cat([boxes[keep], scores[keep][:, None]], -1), keep


# ---------------------------------------------------------------------- #
# RoIAlign
# ---------------------------------------------------------------------- #
def _pair(v) -> Tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if isinstance(v, Sequence) and len(v) == 2:
        return int(v[0]), int(v[1])
    raise ValueError(f'RoIAlign: output_size must be an int or (h, w), got '
                     f'{v!r}')


def roi_align(input: torch.Tensor, rois: torch.Tensor,
              output_size: Union[int, Tuple[int, int]],
              spatial_scale: float = 1.0, sampling_ratio: int = 0,
              pool_mode: str = 'avg', aligned: bool = True) -> torch.Tensor:
    """mmcv's ``roi_align`` (``rois``: ``(K, 5)``, batch index then
    ``x1, y1, x2, y2``) on :func:`torchvision.ops.roi_align`."""
    from torchvision.ops import roi_align as tv_roi_align
    if pool_mode != 'avg':
        raise NotImplementedError(
            f'roi_align: pool_mode={pool_mode!r} is not provided by the '
            "torchvision-backed stand-in for mmcv.ops (only 'avg')")
    if rois.dim() != 2 or rois.size(1) != 5:
        raise ValueError('roi_align: rois must be (K, 5) (batch index, x1, '
                         f'y1, x2, y2), got {tuple(rois.shape)}')
    args = (_pair(output_size), float(spatial_scale), int(sampling_ratio),
            bool(aligned))
    if input.dtype == rois.dtype:
        return tv_roi_align(input, rois, *args)
    # e.g. half features and float boxes under AMP: sample in the wider
    # type (never round the boxes), return the features' type
    dtype = torch.promote_types(input.dtype, rois.dtype)
    return tv_roi_align(input.to(dtype), rois.to(dtype), *args).to(
        input.dtype)


class RoIAlign(nn.Module):
    """mmcv's ``RoIAlign`` module (the arguments mmdet's RoI extractors
    pass: ``output_size``, ``spatial_scale``, ``sampling_ratio``,
    ``pool_mode``, ``aligned``)."""

    def __init__(self, output_size, spatial_scale: float = 1.0,
                 sampling_ratio: int = 0, pool_mode: str = 'avg',
                 aligned: bool = True, use_torchvision: bool = False):
        super().__init__()
        if pool_mode != 'avg':
            raise NotImplementedError(
                f'RoIAlign: pool_mode={pool_mode!r} is not provided by the '
                "torchvision-backed stand-in for mmcv.ops (only 'avg')")
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.pool_mode = pool_mode
        self.aligned = aligned
        self.use_torchvision = use_torchvision

    def forward(self, input: torch.Tensor, rois: torch.Tensor):
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.pool_mode, self.aligned)

    def extra_repr(self) -> str:
        return (f'output_size={self.output_size}, spatial_scale='
                f'{self.spatial_scale}, sampling_ratio={self.sampling_ratio}'
                f', pool_mode={self.pool_mode}, aligned={self.aligned}')


# ---------------------------------------------------------------------- #
# focal loss
# ---------------------------------------------------------------------- #
def sigmoid_focal_loss(input: torch.Tensor, target: torch.Tensor,
                       gamma: float = 2.0, alpha: float = 0.25,
                       weight: Optional[torch.Tensor] = None,
                       reduction: str = 'mean') -> torch.Tensor:
    """mmcv's CUDA ``sigmoid_focal_loss``: ``input`` ``(N, C)`` logits,
    ``target`` ``(N, )`` class indices (``C`` = background: no positive),
    ``weight`` per class (indexed by each sample's target), ``reduction``
    ``'none'`` (``(N, C)``), ``'mean'`` (sum / N) or ``'sum'``."""
    if input.dim() != 2 or target.dim() != 1 or \
            input.size(0) != target.size(0) or target.dtype != torch.long:
        raise ValueError(
            'sigmoid_focal_loss: input must be (N, C) and target (N, ) '
            f'class indices (int64), got {tuple(input.shape)} and '
            f'{tuple(target.shape)} {target.dtype}')
    if reduction not in ('none', 'mean', 'sum'):
        raise ValueError(f'sigmoid_focal_loss: unknown reduction '
                         f'{reduction!r}')
    num_classes = input.size(1)
    positive = F.one_hot(target, num_classes + 1)[:, :num_classes].to(
        input.dtype)
    p = input.sigmoid()
    log_p, log_1mp = F.logsigmoid(input), F.logsigmoid(-input)
    loss = -(alpha * positive * (1 - p).pow(gamma) * log_p +
             (1 - alpha) * (1 - positive) * p.pow(gamma) * log_1mp)
    if weight is not None:
        if weight.dim() != 1 or weight.size(0) != num_classes:
            raise ValueError('sigmoid_focal_loss: weight must be (C, ), got '
                             f'{tuple(weight.shape)}')
        # mmcv indexes the weight by the sample's target (0 for background)
        w = torch.cat([weight, weight.new_zeros(1)])[target]
        loss = loss * w[:, None]
    if reduction == 'mean':
        return loss.sum() / input.size(0)
    if reduction == 'sum':
        return loss.sum()
    return loss


class SigmoidFocalLoss(nn.Module):
    """mmcv's ``SigmoidFocalLoss`` module."""

    def __init__(self, gamma: float, alpha: float,
                 weight: Optional[torch.Tensor] = None,
                 reduction: str = 'mean'):
        super().__init__()
        self.gamma, self.alpha, self.reduction = gamma, alpha, reduction
        self.register_buffer('weight', weight)

    def forward(self, input, target):
        return sigmoid_focal_loss(input, target, self.gamma, self.alpha,
                                  self.weight, self.reduction)


# ---------------------------------------------------------------------- #
# placeholders and the module itself
# ---------------------------------------------------------------------- #
def _unavailable(name: str):
    message = (f'mmcv.ops.{name} needs mmcv\'s compiled ops, which are not '
               'installed here; the torchvision-backed stand-in '
               '(tools.analysis.lib.ops_standin) provides only nms, '
               'batched_nms, roi_align / RoIAlign and sigmoid_focal_loss')

    if name[:1].isupper():  # a class: imports (and can be subclassed)
        def __init__(self, *args, **kwargs):
            raise NotImplementedError(message)
        return type(name, (nn.Module, ), dict(
            __init__=__init__, __doc__=message, __module__=MODULE))

    def op(*args, **kwargs):
        raise NotImplementedError(message)
    op.__name__ = op.__qualname__ = name
    op.__doc__ = message
    return op


_PROVIDED = dict(nms=nms, batched_nms=batched_nms, roi_align=roi_align,
                 RoIAlign=RoIAlign, sigmoid_focal_loss=sigmoid_focal_loss,
                 SigmoidFocalLoss=SigmoidFocalLoss)
#: the stand-in's submodules: ``mmcv.ops.<name>`` -> what it holds
_SUBMODULES = dict(
    nms=('nms', 'batched_nms', 'soft_nms', 'nms_match', 'nms_rotated'),
    roi_align=('roi_align', 'RoIAlign'),
    focal_loss=('sigmoid_focal_loss', 'SigmoidFocalLoss',
                'softmax_focal_loss', 'SoftmaxFocalLoss'),
    carafe=('CARAFE', 'CARAFEPack', 'CARAFENaive', 'carafe', 'carafe_naive'),
    modulated_deform_conv=('ModulatedDeformConv2d',
                           'ModulatedDeformConv2dPack',
                           'modulated_deform_conv2d'),
    deform_conv=('DeformConv2d', 'DeformConv2dPack', 'deform_conv2d'),
    multi_scale_deform_attn=('MultiScaleDeformableAttention', ),
)
#: ``mmcv.ops`` modules displaced by the stand-in (see uninstall)
_SAVED: dict = {}
#: names that mmcv's own modules import from ``mmcv.ops`` inside a
#: ``try`` (left undefined when that fails, though mmdet imports them
#: from there): ``{module: (names)}``, filled in if already imported
_MMCV_OPTIONAL = {
    'mmcv.cnn.bricks.transformer': ('MultiScaleDeformableAttention', ),
}


def _lookup(name: str):
    """An attribute of the stand-in: provided op, pure mmcv op, or
    placeholder (cached on the module)."""
    if name.startswith('__'):
        raise AttributeError(name)
    if name in _PROVIDED:
        value = _PROVIDED[name]
    elif name in PURE_NAMES:
        value = getattr(importlib.import_module(
            f'{MODULE}.{PURE_NAMES[name]}'), name)
    else:
        value = _unavailable(name)
    setattr(sys.modules[MODULE], name, value)
    return value


def _mmcv_ops_dir() -> Optional[str]:
    try:
        import mmcv
    except ImportError:
        return None
    return osp.join(osp.dirname(mmcv.__file__), 'ops')


def install_ops_standin(force: bool = False) -> bool:
    """Register the stand-in as ``mmcv.ops`` if mmcv's compiled ops do not
    import (or always, with ``force``, e.g. to compare the two); returns
    whether the stand-in is now in place. Needs mmcv itself (mmcv-lite is
    enough) and torchvision."""
    import mmcv
    if is_installed():
        return True
    if not force and compiled_ops_available():
        return False
    try:
        import torchvision.ops  # noqa: F401
    except ImportError as e:
        raise ImportError('the mmcv.ops stand-in needs torchvision') from e
    # mmcv's own ops (forced) or leftovers of a failed import of them:
    # kept aside, put back by uninstall_ops_standin
    _SAVED.clear()
    for key in [k for k in sys.modules
                if k == MODULE or k.startswith(MODULE + '.')]:
        _SAVED[key] = sys.modules.pop(key)
    module = types.ModuleType(MODULE, __doc__)
    module.IS_STANDIN = True
    module.__path__ = [_mmcv_ops_dir()]  # mmcv's pure-PyTorch files
    module.__getattr__ = _lookup
    module.__all__ = sorted(_PROVIDED)
    module.__file__ = __file__
    sys.modules[MODULE] = module
    for sub, names in _SUBMODULES.items():
        submodule = types.ModuleType(f'{MODULE}.{sub}')
        for name in names:
            setattr(submodule, name, _lookup(name))
        sys.modules[submodule.__name__] = submodule
        setattr(module, sub, submodule)
    mmcv.ops = module
    for name, attrs in _MMCV_OPTIONAL.items():
        owner = sys.modules.get(name)
        for attr in attrs:
            if owner is not None and not hasattr(owner, attr):
                setattr(owner, attr, _lookup(attr))
    return True


def uninstall_ops_standin():
    """Remove the stand-in (and what was imported through it) and put back
    the ``mmcv.ops`` modules it displaced (mmcv's own, when installed with
    ``force``); modules imported meanwhile keep what they imported."""
    if not is_installed():
        return
    import mmcv
    for key in [k for k in sys.modules
                if k == MODULE or k.startswith(MODULE + '.')]:
        del sys.modules[key]
    sys.modules.update(_SAVED)
    if MODULE in _SAVED:
        mmcv.ops = _SAVED[MODULE]
    elif hasattr(mmcv, 'ops'):
        del mmcv.ops
    _SAVED.clear()
