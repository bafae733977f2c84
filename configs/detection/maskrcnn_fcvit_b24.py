# Mask R-CNN + FPN, FCViT-B24 backbone, COCO instance segmentation, 1x.
# Same recipe as maskrcnn_fcvit_b12.py. Reference COCO val2017: box AP 44.1,
# mask AP 39.9.
_base_ = './maskrcnn_fcvit_b12.py'

# ImageNet-1K FCViT-B24 weights, a path or URL (None: the backbone starts
# from scratch, with a warning). Which file, and how: docs/detection.md,
# "The pretrained backbone".
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        init_cfg=dict(checkpoint=pretrained)))
