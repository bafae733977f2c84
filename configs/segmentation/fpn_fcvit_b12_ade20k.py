# Semantic FPN, FCViT-B12 backbone, ADE20K, 512 x 512 crops, 40k iterations.
# The reference's recipe: AdamW lr 2e-4, weight decay 1e-4, poly (power 0.9),
# 8 GPUs x 4 images. Reference ADE20K val: 43.3 mIoU (single scale).
_base_ = [
    './_base_/models/fpn_fcvit.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/fpn_adamw_40k.py',
    './_base_/default_runtime.py',
]

# ImageNet-1K FCViT-B12 weights, a path or URL (None: the backbone starts
# from scratch, with a warning). Which file, and how: docs/segmentation.md,
# "The pretrained backbone".
pretrained = None

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='b12',
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
