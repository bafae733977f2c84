# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""What of each model goes into ONNX graphs.

The graphs hold the network: every learned layer, from the normalised image
batch to the heads' raw outputs. What the libraries do around the network
stays theirs and runs in Python: the test pipeline, the data preprocessor
(normalisation, padding), and for detection the anchors, box decoding, NMS,
RoIAlign and mask pasting (mmcv ops). A *part* names a method of the
library model (``extract_feat``, a head's ``forward``, ...) whose
computation one graph replaces; the runtime model
(:mod:`fcvit_mm.deploy.runtime`) is the library's own model with those
methods answered by ONNX Runtime, so the library's own inference functions
run it unchanged.

Parts per model type:

* mmpretrain ``ImageClassifier``: ``classifier`` = backbone, neck, head ->
  logits (the runtime passes them through ``head.forward``);
* mmseg ``EncoderDecoder``: ``encode_decode`` = backbone, neck, decode head,
  and the bilinear resize of the logits to the input's size, as the decode
  head's ``predict_by_feat`` does;
* mmdet single-stage detectors: ``extract_feat`` (backbone + neck) and
  ``bbox_head`` (class scores and box deltas per level);
* mmdet two-stage detectors with a ``StandardRoIHead``: ``extract_feat``,
  ``rpn_head``, ``roi_head.bbox_head`` (per RoI: class scores, deltas) and
  ``roi_head.mask_head`` (per RoI: mask logits), each RoI head taking the
  RoIAlign features of any number of RoIs.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..utils.config import model_task


@dataclass
class Part:
    """One graph: ``fn`` is exported on ``example`` (a tuple of the
    function's positional arguments, nested tuples of tensors allowed);
    ``replaces`` is the attribute path of the method it answers at runtime
    (``''`` for the model itself: ``'extract_feat'``, else e.g.
    ``'rpn_head.forward'``); ``identity`` lists methods that must pass
    their first argument through at runtime (what the graph already
    computed); ``dynamic`` names, per input tensor (flattened), its
    dynamic axes."""
    name: str
    fn: Callable
    example: Tuple
    replaces: str
    dynamic: List[Dict[int, str]]
    identity: List[str] = field(default_factory=list)
    image_input: bool = False  # the first input is the image batch
    module: Optional[nn.Module] = None  # holds fn's weights (None: model)


def _image_axes() -> Dict[int, str]:
    return {0: 'batch', 2: 'height', 3: 'width'}


def _feature_axes(n: int) -> List[Dict[int, str]]:
    return [{0: 'batch', 2: f'height{i}', 3: f'width{i}'} for i in range(n)]


def build_parts(model: nn.Module, image: torch.Tensor,
                num_rois: int = 8) -> List[Part]:
    """The parts of ``model`` (in eval mode) with example inputs derived
    from ``image`` (B, 3, H, W), the export size."""
    task = model_task(model)
    if task == 'classification':
        return [Part('classifier',
                     lambda x: model.head(model.extract_feat(x)), (image, ),
                     'extract_feat', [_image_axes()],
                     identity=['head.forward'], image_input=True)]
    if task == 'segmentation':
        return [Part('encode_decode', lambda x: _encode_decode(model, x),
                     (image, ), 'encode_decode', [_image_axes()],
                     image_input=True)]
    return _detector_parts(model, image, num_rois)


def _encode_decode(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """mmseg's ``encode_decode`` with the logits resized to the input's
    (dynamic) size, which is the padded batch's size that
    ``predict_by_feat`` resizes to in whole and slide inference."""
    from mmseg.models.utils import resize
    logits = model.decode_head.forward(model.extract_feat(x))
    return resize(logits, size=x.shape[2:], mode='bilinear',
                  align_corners=model.decode_head.align_corners)


def _detector_parts(model: nn.Module, image: torch.Tensor,
                    num_rois: int) -> List[Part]:
    with torch.no_grad():
        feats = model.extract_feat(image)
    parts = [Part('extract_feat', model.extract_feat, (image, ),
                  'extract_feat', [_image_axes()], image_input=True)]
    n = len(feats)
    if getattr(model, 'rpn_head', None) is not None:
        parts.append(Part('rpn_head', model.rpn_head.forward, (feats, ),
                          'rpn_head.forward', _feature_axes(n),
                          module=model.rpn_head))
        parts += _roi_parts(model, num_rois)
    elif getattr(model, 'bbox_head', None) is not None:
        parts.append(Part('bbox_head', model.bbox_head.forward, (feats, ),
                          'bbox_head.forward', _feature_axes(n),
                          module=model.bbox_head))
    else:
        raise NotImplementedError(
            f'cannot export a {type(model).__name__}: it has neither an '
            'rpn_head nor a bbox_head')
    return parts


def _roi_size(extractor: nn.Module) -> Tuple[int, int]:
    size = extractor.roi_layers[0].output_size
    return (size, size) if isinstance(size, int) else tuple(size)


def _roi_parts(model: nn.Module, num_rois: int) -> List[Part]:
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None or type(roi_head).__name__ != 'StandardRoIHead':
        raise NotImplementedError(
            f'cannot export the RoI head {type(roi_head).__name__} of a '
            f'{type(model).__name__}: supported is mmdet\'s StandardRoIHead '
            '(Faster / Mask R-CNN)')
    if roi_head.with_shared_head:
        raise NotImplementedError('RoI heads with a shared head are not '
                                  'supported')
    parts = []
    for name, extractor in (('bbox_head', 'bbox_roi_extractor'),
                            ('mask_head', 'mask_roi_extractor')):
        head = getattr(roi_head, name, None)
        if head is None:
            continue
        ext = getattr(roi_head, extractor)
        example = torch.randn(num_rois, ext.out_channels, *_roi_size(ext))
        parts.append(Part(f'roi_head.{name}', head.forward, (example, ),
                          f'roi_head.{name}.forward', [{0: 'rois'}],
                          module=head))
    return parts


def resolve(root: Any, path: str) -> Tuple[Any, str]:
    """``(object, attribute)`` for a dotted ``path`` under ``root``."""
    *owners, attr = path.split('.')
    obj = root
    for name in owners:
        obj = getattr(obj, name)
    return obj, attr


def min_input_size(model: nn.Module) -> Optional[int]:
    """The smallest height / width the model's backbone takes (FCViT's
    ``min_size``), or None if it does not say."""
    backbone = getattr(model, 'backbone', None)
    return getattr(backbone, 'min_size', None)
