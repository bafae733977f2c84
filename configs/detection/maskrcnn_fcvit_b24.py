# Mask R-CNN + FPN, FCViT-B24 backbone, COCO instance segmentation, 1x.
# Same recipe as maskrcnn_fcvit_b12.py. Reference COCO val2017: box AP 44.1,
# mask AP 39.9.
_base_ = './maskrcnn_fcvit_b12.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

# ImageNet-1K FCViT-B24 weights (path or URL; the reference's checkpoint works
# unconverted). None trains from scratch (a warning is logged).
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
