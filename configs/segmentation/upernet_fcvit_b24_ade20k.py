# UperNet, FCViT-B24 backbone, ADE20K: same recipe as
# upernet_fcvit_b12_ade20k.py with drop-path 0.3 (as Swin-T / ConvNeXt-T of
# similar size use 0.3 / 0.4).
_base_ = './upernet_fcvit_b12_ade20k.py'

# ImageNet-1K FCViT-B24 weights, a path or URL (None: the backbone starts
# from scratch, with a warning). Which file, and how: docs/segmentation.md,
# "The pretrained backbone".
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=pretrained)))
