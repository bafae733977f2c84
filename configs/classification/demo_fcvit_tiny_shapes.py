# The `make demo TASK=cls` model: the ImageNet recipe (fcvit_tiny_in1k.py)
# shrunk to run on a laptop CPU. FCViT-tiny trained from scratch on the
# generated shapes dataset in the ImageNet layout
# (tools/dataset_converters/make_shapes.py: one circle, square or triangle per
# 128 x 128 image), a short schedule without Mixup / CutMix / RandAugment
# (they slow down a run of a few hundred steps), top-1 on val.
_base_ = './fcvit_tiny_in1k.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

data_root = 'data/shapes/imagenet/'
classes = ('circle', 'square', 'triangle')
img_scale = (64, 64)
max_iters = 800
val_interval = 200

data_preprocessor = dict(num_classes=len(classes))
model = dict(
    backbone=dict(
        drop_path_rate=0.,
        # from scratch: blocks start at 1e-2 of the residual (1e-5 on
        # ImageNet), so the mixers learn within a few hundred steps
        layer_scale_init_value=1e-2),
    head=dict(num_classes=len(classes)),
    train_cfg=None)  # no Mixup / CutMix

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale),
    dict(type='PackInputs'),
]
# the ImageNet dataset class reads the layout (meta/{train,val}.txt)
train_dataloader = dict(
    batch_size=32, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, by_epoch=False, max_iters=max_iters,
                 val_interval=val_interval)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=30),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=30,
         end=max_iters)
]
optim_wrapper = dict(optimizer=dict(lr=2e-3))
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(
    logger=dict(interval=20, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=val_interval, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)  # the same run every time (up to float noise)
work_dir = './work_dirs/demo_cls'
