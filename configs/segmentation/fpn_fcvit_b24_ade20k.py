# Semantic FPN, FCViT-B24 backbone, ADE20K: same recipe as
# fpn_fcvit_b12_ade20k.py. Reference ADE20K val: 45.5 mIoU (single scale).
_base_ = './fpn_fcvit_b12_ade20k.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

# ImageNet-1K FCViT-B24 weights (path or URL; the reference's checkpoint works
# unconverted). None trains from scratch.
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
