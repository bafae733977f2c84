# FCViT-B24 on ImageNet-1K: fcvit_b12_in1k.py's recipe, drop-path 0.1, test
# crop ratio 0.95 (short side 235 = floor(224 / 0.95), bicubic).
# 26,960,232 parameters; reference top-1 82.5.
# Reference weights: the reference's published fcvit_b24 ImageNet-1K
# checkpoint, the .pth.tar of the download table of the reference README
# (https://github.com/ma-xu/FCViT; this project does not record the asset's
# file name). Saved as checkpoints/fcvit_b24.pth.tar, evaluate it with:
#   python tools/model_converters/fcvit_to_mm.py \
#       checkpoints/fcvit_b24.pth.tar checkpoints/fcvit_b24_mm.pth
#   python tools/test.py configs/classification/fcvit_b24_in1k.py \
#       checkpoints/fcvit_b24_mm.pth
_base_ = './fcvit_b12_in1k.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

model = dict(backbone=dict(arch='b24', drop_path_rate=0.1))

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
