# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Compare what the library's inference gives for a PyTorch model and for
its exported counterpart (run by ONNX Runtime or OpenVINO), with the
acceptance criteria of docs/deployment.md, per precision
(:data:`CRITERIA`: the keyword arguments of each comparator):

* float32 (``'fp32'``): detections above the score threshold the same
  (label, every box coordinate within 1 pixel, score within 1e-3), masks
  with IoU >= 0.99; segmentation: the same class on >= 99.9% of the
  pixels; classification: the same top-5 classes, in order;
* bf16 (``'bf16'``): at least 90% of the detections above the threshold
  (both sides together) matched with the same label, box IoU >= 0.9 and
  score within 0.02, masks with IoU >= 0.9; segmentation: >= 99% of the
  pixels; classification: the same top-1 class, the same set of top-5
  classes and every score within 0.01.

Each comparator returns a dict of measurements and ``ok``;
:func:`compare` applies a precision's criteria.
"""
from typing import Dict, Optional

import numpy as np
import torch


def _to_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else \
        np.asarray(x)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(x1, y1, x2, y2)`` box with each row of ``boxes``."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.)


def compare_detections(ref, got, score_thr: float = 0.3,
                       box_tol: float = 1.0, score_tol: float = 1e-3,
                       mask_iou: float = 0.99,
                       min_box_iou: Optional[float] = None,
                       min_matched: float = 1.0) -> Dict:
    """``ref`` / ``got``: mmdet ``DetDataSample`` (``pred_instances``).

    The detections of either side scoring at least ``score_thr`` must have
    a partner on the other side (all of them, or with ``min_matched`` < 1
    that share of them, both sides counted together): the same label,
    score within ``score_tol`` (a partner may score just below the
    threshold, within ``score_tol``), and every box coordinate within
    ``box_tol`` pixels, or with ``min_box_iou`` given, box IoU at least
    that instead; the masks of partners must overlap by IoU ``mask_iou``
    at least."""
    r, g = ref.pred_instances, got.pred_instances
    rs, gs = _to_np(r.scores), _to_np(g.scores)
    rl, gl = _to_np(r.labels), _to_np(g.labels)
    rb, gb = _to_np(r.bboxes), _to_np(g.bboxes)
    has_masks = 'masks' in r and 'masks' in g
    rm = _to_np(r.masks).astype(bool) if has_masks else None
    gm = _to_np(g.masks).astype(bool) if has_masks else None

    def match(i, scores_a, labels_a, boxes_a, scores_b, labels_b, boxes_b):
        if not len(scores_b):
            return None
        if min_box_iou is None:  # how far off, the worst coordinate
            off = np.abs(boxes_b - boxes_a[i]).max(axis=1)
            near = off <= box_tol
        else:
            off = -box_iou(boxes_a[i], boxes_b)
            near = -off >= min_box_iou
        ok = ((labels_b == labels_a[i])
              & (np.abs(scores_b - scores_a[i]) <= score_tol) & near)
        idx = np.flatnonzero(ok)
        return idx[np.argmin(off[idx])] if len(idx) else None

    res = dict(ref_count=int((rs >= score_thr).sum()),
               got_count=int((gs >= score_thr).sum()), unmatched=0,
               max_box_diff=0.0, min_box_iou=1.0, max_score_diff=0.0,
               min_mask_iou=1.0)
    for i in np.flatnonzero(gs >= score_thr):  # nothing extra in got
        if match(i, gs, gl, gb, rs, rl, rb) is None:
            res['unmatched'] += 1
    for i in np.flatnonzero(rs >= score_thr):
        j = match(i, rs, rl, rb, gs, gl, gb)
        if j is None:
            res['unmatched'] += 1
            continue
        res['max_box_diff'] = max(res['max_box_diff'],
                                  float(np.abs(gb[j] - rb[i]).max()))
        res['min_box_iou'] = min(res['min_box_iou'],
                                 float(box_iou(rb[i], gb[j:j + 1])[0]))
        res['max_score_diff'] = max(res['max_score_diff'],
                                    float(abs(gs[j] - rs[i])))
        if has_masks:
            union = np.logical_or(rm[i], gm[j]).sum()
            iou = np.logical_and(rm[i], gm[j]).sum() / union if union else 1.
            res['min_mask_iou'] = min(res['min_mask_iou'], float(iou))
    total = res['ref_count'] + res['got_count']
    res['matched'] = 1 - res['unmatched'] / total if total else 1.0
    res['ok'] = (res['matched'] >= min_matched
                 and res['min_mask_iou'] >= mask_iou)
    return res


def compare_segmentation(ref, got, pixel_agree: float = 0.999) -> Dict:
    """``ref`` / ``got``: mmseg ``SegDataSample`` (``pred_sem_seg``)."""
    a = _to_np(ref.pred_sem_seg.data)
    b = _to_np(got.pred_sem_seg.data)
    if a.shape != b.shape:
        return dict(agree=0.0, ok=False,
                    shape_mismatch=(a.shape, b.shape))
    agree = float((a == b).mean())
    return dict(agree=agree, pixels=int(a.size), ok=agree >= pixel_agree)


def compare_classification(ref: dict, got: dict, topk: int = 5,
                           ordered: bool = True,
                           score_tol: Optional[float] = None) -> Dict:
    """``ref`` / ``got``: results of mmpretrain's
    ``ImageClassificationInferencer`` (``pred_scores``). The same top-k
    classes in order (``ordered``), or the same top-1 class and the same
    set of top-k classes; with ``score_tol``, every score within it."""
    a, b = np.asarray(ref['pred_scores']), np.asarray(got['pred_scores'])
    k = min(topk, a.size)
    ta, tb = np.argsort(-a)[:k], np.argsort(-b)[:k]
    same = bool((ta == tb).all()) if ordered else bool(
        ta[0] == tb[0] and set(ta.tolist()) == set(tb.tolist()))
    diff = float(np.abs(a - b).max())
    return dict(topk=k, ref_topk=ta.tolist(), got_topk=tb.tolist(),
                max_score_diff=diff,
                ok=same and (score_tol is None or diff <= score_tol))


def library_inference(model, task: str, img):
    """The library's own inference of ``model`` (PyTorch or
    :func:`~fcvit_mm.deploy.init_onnx_model`) on ``img`` (a path, or a
    BGR uint8 array as the libraries read images):

    * detection: ``mmdet.apis.inference_detector`` with the config's test
      pipeline less ``LoadAnnotations`` (as mmdet's ``DetInferencer``
      does);
    * segmentation: ``mmseg.apis.inference_model``;
    * classification: mmpretrain's ``ImageClassificationInferencer``.
    """
    if task == 'detection':
        from mmcv.transforms import Compose
        from mmdet.apis import inference_detector
        from mmdet.utils import get_test_pipeline_cfg
        steps = [t for t in get_test_pipeline_cfg(model.cfg.copy())
                 if 'LoadAnnotations' not in t['type']]
        if isinstance(img, np.ndarray):
            steps[0].type = 'mmdet.LoadImageFromNDArray'
        return inference_detector(model, img, test_pipeline=Compose(steps))
    if task == 'segmentation':
        from mmseg.apis import inference_model
        return inference_model(model, img)
    if task == 'classification':
        from mmpretrain.apis import ImageClassificationInferencer
        return ImageClassificationInferencer(model, device='cpu')(img)[0]
    raise ValueError(f'unknown task {task!r}')


COMPARE = {'detection': compare_detections,
           'segmentation': compare_segmentation,
           'classification': compare_classification}
#: precision -> task -> the comparator's criteria (docs/deployment.md)
CRITERIA = {
    'fp32': {'detection': dict(box_tol=1.0, score_tol=1e-3, mask_iou=0.99),
             'segmentation': dict(pixel_agree=0.999),
             'classification': dict(topk=5)},
    'bf16': {'detection': dict(min_box_iou=0.9, score_tol=0.02,
                               mask_iou=0.9, min_matched=0.9),
             'segmentation': dict(pixel_agree=0.99),
             'classification': dict(topk=5, ordered=False, score_tol=0.01)},
}


def compare(task: str, ref, got, precision: str = 'fp32', **kwargs) -> Dict:
    """``ref`` against ``got`` (the library's inference results of
    ``task``) by the criteria of ``precision`` (:data:`CRITERIA`);
    ``kwargs`` (e.g. a detection ``score_thr``) are added to them."""
    if precision not in CRITERIA:
        raise ValueError(f'no parity criteria for precision {precision!r}: '
                         f'choose one of {", ".join(CRITERIA)}')
    return COMPARE[task](ref, got, **{**CRITERIA[precision][task],
                                      **kwargs})
