# RetinaNet + FPN, FCViT-B24 backbone, COCO detection, 1x. Same recipe as
# retinanet_fcvit_b12.py.
_base_ = './retinanet_fcvit_b12.py'

# ImageNet-1K FCViT-B24 weights, a path or URL (None: the backbone starts
# from scratch, with a warning). Which file, and how: docs/detection.md,
# "The pretrained backbone".
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        init_cfg=dict(checkpoint=pretrained)))
