# Semantic FPN, FCViT-B24 backbone, ADE20K: same recipe as
# fpn_fcvit_b12_ade20k.py. Reference ADE20K val: 45.5 mIoU (single scale).
_base_ = './fpn_fcvit_b12_ade20k.py'

# ImageNet-1K FCViT-B24 weights, a path or URL (None: the backbone starts
# from scratch, with a warning). Which file, and how: docs/segmentation.md,
# "The pretrained backbone".
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        init_cfg=dict(checkpoint=pretrained)))
