# FCViT-tiny on ImageNet-1K: fcvit_b12_in1k.py's recipe with the tiny widths
# (32, 64, 160, 320) and depths (3, 3, 5, 2); drop-path 0.1, test crop 0.9.
# 4,784,752 parameters; reference top-1 74.9.
# The reference's weights, and how to evaluate them: docs/classification.md,
# "The reference's weights".
_base_ = './fcvit_b12_in1k.py'

model = dict(
    backbone=dict(arch='tiny'),
    head=dict(in_channels=320))
