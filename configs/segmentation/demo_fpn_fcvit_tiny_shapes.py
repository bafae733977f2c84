# The `make demo TASK=seg` model: the ADE20K Semantic FPN recipe
# (fpn_fcvit_b12_ade20k.py) shrunk to run on a laptop CPU. FCViT-tiny trained
# from scratch on the generated shapes dataset in the ADE20K layout
# (tools/dataset_converters/make_shapes.py, 128 x 128 images), FPN and head
# slimmed to 64 channels, a short schedule, mIoU on val.
#
# The label maps follow ADE20K (0 = background, 1..3 = the shapes). ADE20K's
# recipe ignores label 0 (reduce_zero_label=True); on shapes the background
# is a real region, so the demo keeps it as a fourth class and the model
# must find the shapes, not only tell them apart.
_base_ = './fpn_fcvit_b12_ade20k.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

data_root = 'data/shapes/ade20k/'
classes = ('background', 'circle', 'square', 'triangle')
metainfo = dict(classes=classes,
                palette=[(40, 40, 40), (220, 20, 60), (0, 130, 200),
                         (60, 180, 75)])
img_scale = (128, 128)
channels = 64  # FPN width (256 on ADE20K) and head width (128)
max_iters = 600
val_interval = 150

model = dict(
    data_preprocessor=dict(size=img_scale),
    backbone=dict(
        arch='tiny',
        # from scratch: blocks start at 1e-2 of the residual, not 1e-6, so
        # the token and channel mixers learn within a few hundred steps
        layer_scale_init_value=1e-2,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 160, 320], out_channels=channels),
    decode_head=dict(in_channels=[channels] * 4, channels=channels,
                     num_classes=len(classes)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
               img_suffix='.jpg', seg_map_suffix='.png',
               reduce_zero_label=False)
train_dataloader = dict(batch_size=8, num_workers=1,
                        dataset=dict(pipeline=train_pipeline, **dataset))
val_dataloader = dict(batch_size=8, num_workers=1,
                      dataset=dict(pipeline=test_pipeline, **dataset))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=50,
         end=max_iters)
]
auto_scale_lr = dict(base_batch_size=8)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=val_interval, max_keep_ckpts=1,
                    save_last=True))
randomness = dict(seed=0)  # the same run every time (up to float noise)
work_dir = './work_dirs/demo_seg'
