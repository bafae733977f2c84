# maskrcnn_fcvit_b12.py with automatic mixed precision (mmengine's
# AmpOptimWrapper, dynamic loss scaling): the same as `--amp` on the plain
# config. Needs a GPU (mmengine's AMP wrapper refuses to run on a CPU).
_base_ = './maskrcnn_fcvit_b12.py'

# ImageNet-1K FCViT-B12 weights, a path or URL (None: the backbone starts
# from scratch, with a warning). Which file, and how: docs/detection.md,
# "The pretrained backbone".
pretrained = None

model = dict(
    backbone=dict(init_cfg=dict(checkpoint=pretrained)))

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
