# UperNet, FCViT-B24 backbone, ADE20K: same recipe as
# upernet_fcvit_b12_ade20k.py with drop-path 0.3 (as Swin-T / ConvNeXt-T of
# similar size use 0.3 / 0.4).
_base_ = './upernet_fcvit_b12_ade20k.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

# ImageNet-1K FCViT-B24 weights (path or URL; the reference's checkpoint works
# unconverted). None trains from scratch.
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        drop_path_rate=0.3,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
