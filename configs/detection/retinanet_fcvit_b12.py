# RetinaNet + FPN (from stride 8, extra convs on input), FCViT-B12 backbone,
# COCO detection, 1x. The usual recipe for such backbones: AdamW lr 1e-4,
# weight decay 1e-4, 8 GPUs x 2 images.
_base_ = [
    './_base_/models/retinanet_fcvit_fpn.py',
    './_base_/datasets/coco_detection.py',
    './_base_/schedules/adamw_1x.py',
    './_base_/default_runtime.py',
]

# ImageNet-1K FCViT-B12 weights, a path or URL (None: the backbone starts
# from scratch, with a warning). Which file, and how: docs/detection.md,
# "The pretrained backbone".
pretrained = None

model = dict(
    backbone=dict(
        arch='b12',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

optim_wrapper = dict(optimizer=dict(lr=1e-4))
auto_scale_lr = dict(base_batch_size=16)
