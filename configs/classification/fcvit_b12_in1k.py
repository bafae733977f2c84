# FCViT-B12 on ImageNet-1K with the reference's recipe: 300 epochs,
# 8 GPUs x 128 images, AdamW lr 1e-3 at batch 1024, weight decay 0.05,
# drop-path 0.1, test crop ratio 0.9 (bicubic).
# 14,701,832 parameters; reference top-1 80.9.
# Reference weights: the reference's published fcvit_b12 ImageNet-1K
# checkpoint, the .pth.tar of the download table of the reference README
# (https://github.com/ma-xu/FCViT; this project does not record the asset's
# file name). Saved as checkpoints/fcvit_b12.pth.tar, evaluate it with:
#   python tools/model_converters/fcvit_to_mm.py \
#       checkpoints/fcvit_b12.pth.tar checkpoints/fcvit_b12_mm.pth
#   python tools/test.py configs/classification/fcvit_b12_in1k.py \
#       checkpoints/fcvit_b12_mm.pth
_base_ = [
    './_base_/models/fcvit_classifier.py',
    './_base_/datasets/imagenet_bs128_fcvit_224.py',
    './_base_/schedules/imagenet_bs1024_adamw_fcvit.py',
    './_base_/default_runtime.py',
]
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='b12', drop_path_rate=0.1),
    head=dict(in_channels=512))
