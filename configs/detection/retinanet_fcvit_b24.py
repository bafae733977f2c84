# RetinaNet + FPN, FCViT-B24 backbone, COCO detection, 1x. Same recipe as
# retinanet_fcvit_b12.py.
_base_ = './retinanet_fcvit_b12.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

# ImageNet-1K FCViT-B24 weights (path or URL; the reference's checkpoint works
# unconverted). None trains from scratch (a warning is logged).
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
