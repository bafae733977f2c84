# UperNet, FCViT-B12 backbone, ADE20K, 512 x 512 crops, the standard 160k
# schedule (AdamW lr 6e-5, weight decay 0.01 except norms / biases / 1-D
# parameters, 1500-iteration warm-up, poly power 1.0), 8 GPUs x 2 images,
# drop-path 0.2. The reference publishes no UperNet result.
_base_ = [
    './_base_/models/upernet_fcvit.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/upernet_adamw_160k.py',
    './_base_/default_runtime.py',
]

# ImageNet-1K FCViT-B12 weights, a path or URL (None: the backbone starts
# from scratch, with a warning). Which file, and how: docs/segmentation.md,
# "The pretrained backbone".
pretrained = None

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='b12',
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
train_dataloader = dict(batch_size=2)
