# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Synthetic batches in the data format of mmdet, mmseg or mmpretrain."""
from typing import Optional, Sequence

import torch


def num_classes_of(cfg_model, default: Optional[int] = 10) -> Optional[int]:
    """The model config's ``num_classes`` (searched in its heads)."""
    if 'num_classes' in cfg_model:
        return cfg_model['num_classes']
    for sub in ('roi_head', 'bbox_head', 'decode_head', 'head'):
        node = cfg_model.get(sub)
        if isinstance(node, (list, tuple)):
            node = node[0] if node else None
        if isinstance(node, dict):
            found = num_classes_of(node, None)
            if found is not None:
                return found
    return default


def synthetic_batch(scope: str, cfg_model, batch: int,
                    size: Sequence[int]) -> dict:
    """Random uint8 images of ``size`` (H, W) and random annotations of the
    kind the ``scope``'s models train on, as a data preprocessor's input
    (``inputs``, ``data_samples``), seeded, on the CPU (the model's data
    preprocessor moves it to the model's device)."""
    H, W = size
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, H, W), dtype=torch.uint8,
                            generator=g) for _ in range(batch)]
    ncls = num_classes_of(cfg_model)
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        packed = demo_mm_inputs(batch, image_shapes=[(3, H, W)] * batch,
                                num_items=[4] * batch, num_classes=ncls,
                                with_mask='mask_head' in str(cfg_model))
        packed['inputs'] = images
        return packed
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        samples = []
        for _ in range(batch):
            s = SegDataSample(metainfo=dict(img_shape=(H, W),
                                            ori_shape=(H, W),
                                            pad_shape=(H, W)))
            s.gt_sem_seg = PixelData(
                data=torch.randint(0, ncls, (1, H, W), generator=g))
            samples.append(s)
        return dict(inputs=images, data_samples=samples)
    if scope == 'mmpretrain':
        from mmpretrain.structures import DataSample
        samples = [DataSample(metainfo=dict(img_shape=(H, W))).set_gt_label(
            int(torch.randint(0, ncls, (1, ), generator=g)))
            for _ in range(batch)]
        return dict(inputs=images, data_samples=samples)
    raise ValueError(f'config default_scope {scope!r} is not supported: '
                     'use an mmdet, mmseg or mmpretrain config')
