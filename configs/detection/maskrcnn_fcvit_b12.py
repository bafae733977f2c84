# Mask R-CNN + FPN, FCViT-B12 backbone, COCO instance segmentation, 1x.
# The reference's recipe: AdamW lr 2e-4, weight decay 1e-4, 8 GPUs x 4 images.
# Reference COCO val2017: box AP 42.3, mask AP 38.6.
_base_ = [
    './_base_/models/maskrcnn_fcvit_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/adamw_1x.py',
    './_base_/default_runtime.py',
]

# ImageNet-1K FCViT-B12 weights, a path or URL (None: the backbone starts
# from scratch, with a warning). Which file, and how: docs/detection.md,
# "The pretrained backbone".
pretrained = None

model = dict(
    backbone=dict(
        arch='b12',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
