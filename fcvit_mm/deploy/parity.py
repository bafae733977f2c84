# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Compare what the library's inference gives for a PyTorch model and for
its exported counterpart (run by ONNX Runtime or OpenVINO), with the
acceptance criteria of docs/deployment.md:

* detection: above the score threshold, the same detections (label, box
  within ``box_tol`` pixels, score within ``score_tol``), masks with IoU at
  least ``mask_iou``;
* segmentation: the same class on at least ``pixel_agree`` of the pixels;
* classification: the same top-k classes, in order.

Each function returns a dict of measurements and ``ok``.
"""
from typing import Dict

import numpy as np
import torch


def _to_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else \
        np.asarray(x)


def compare_detections(ref, got, score_thr: float = 0.3,
                       box_tol: float = 1.0, score_tol: float = 1e-3,
                       mask_iou: float = 0.99) -> Dict:
    """``ref`` / ``got``: mmdet ``DetDataSample`` (``pred_instances``).

    Every detection of either side scoring at least ``score_thr`` must have
    a partner on the other side (same label, every box coordinate within
    ``box_tol``, score within ``score_tol``; a partner may score just below
    the threshold, within ``score_tol``)."""
    r, g = ref.pred_instances, got.pred_instances
    rs, gs = _to_np(r.scores), _to_np(g.scores)
    rl, gl = _to_np(r.labels), _to_np(g.labels)
    rb, gb = _to_np(r.bboxes), _to_np(g.bboxes)
    has_masks = 'masks' in r and 'masks' in g
    rm = _to_np(r.masks).astype(bool) if has_masks else None
    gm = _to_np(g.masks).astype(bool) if has_masks else None

    def match(i, scores_a, labels_a, boxes_a, scores_b, labels_b, boxes_b):
        ok = ((labels_b == labels_a[i])
              & (np.abs(scores_b - scores_a[i]) <= score_tol)
              & (np.abs(boxes_b - boxes_a[i]).max(axis=1) <= box_tol)
              if len(scores_b) else np.zeros(0, bool))
        idx = np.flatnonzero(ok)
        if not len(idx):
            return None
        return idx[np.argmin(np.abs(boxes_b[idx] - boxes_a[i]).max(axis=1))]

    res = dict(ref_count=int((rs >= score_thr).sum()),
               got_count=int((gs >= score_thr).sum()), unmatched=0,
               max_box_diff=0.0, max_score_diff=0.0, min_mask_iou=1.0)
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
        res['max_score_diff'] = max(res['max_score_diff'],
                                    float(abs(gs[j] - rs[i])))
        if has_masks:
            union = np.logical_or(rm[i], gm[j]).sum()
            iou = np.logical_and(rm[i], gm[j]).sum() / union if union else 1.
            res['min_mask_iou'] = min(res['min_mask_iou'], float(iou))
    res['ok'] = (res['unmatched'] == 0 and res['min_mask_iou'] >= mask_iou)
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


def compare_classification(ref: dict, got: dict, topk: int = 5) -> Dict:
    """``ref`` / ``got``: results of mmpretrain's
    ``ImageClassificationInferencer`` (``pred_scores``)."""
    a, b = np.asarray(ref['pred_scores']), np.asarray(got['pred_scores'])
    k = min(topk, a.size)
    ta, tb = np.argsort(-a)[:k], np.argsort(-b)[:k]
    return dict(topk=k, ref_topk=ta.tolist(), got_topk=tb.tolist(),
                max_score_diff=float(np.abs(a - b).max()),
                ok=bool((ta == tb).all()))


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
