# maskrcnn_fcvit_b12.py with automatic mixed precision (mmengine's
# AmpOptimWrapper, dynamic loss scaling): the same as `--amp` on the plain
# config. Needs a GPU (mmengine's AMP wrapper refuses to run on a CPU).
_base_ = './maskrcnn_fcvit_b12.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

# ImageNet-1K FCViT-B12 weights (path or URL; the reference's checkpoint works
# unconverted). None trains from scratch (a warning is logged).
pretrained = None

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
