# FCViT-B24 on ImageNet-1K: fcvit_b12_in1k.py's recipe, drop-path 0.1, test
# crop ratio 0.95 (short side 235 = floor(224 / 0.95), bicubic).
# 26,960,232 parameters; reference top-1 82.5.
# The reference's weights, and how to evaluate them: docs/classification.md,
# "The reference's weights".
_base_ = './fcvit_b12_in1k.py'

model = dict(backbone=dict(arch='b24'))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=235,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
