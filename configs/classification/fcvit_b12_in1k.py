# FCViT-B12 on ImageNet-1K with the reference's recipe: 300 epochs,
# 8 GPUs x 128 images, AdamW lr 1e-3 at batch 1024, weight decay 0.05,
# drop-path 0.1, test crop ratio 0.9 (bicubic).
# 14,701,832 parameters; reference top-1 80.9.
# The reference's weights, and how to evaluate them: docs/classification.md,
# "The reference's weights".
_base_ = [
    './_base_/models/fcvit_classifier.py',
    './_base_/datasets/imagenet_bs128_fcvit_224.py',
    './_base_/schedules/imagenet_bs1024_adamw_fcvit.py',
    './_base_/default_runtime.py',
]

model = dict(
    backbone=dict(arch='b12', drop_path_rate=0.1),
    head=dict(in_channels=512))
