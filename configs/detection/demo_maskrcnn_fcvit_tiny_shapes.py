# The `make demo` detector: the COCO Mask R-CNN recipe (maskrcnn_fcvit_b12.py)
# shrunk to run on a laptop CPU. FCViT-tiny trained from scratch on the
# generated shapes dataset (tools/dataset_converters/make_shapes.py: circle,
# square, triangle, COCO layout, 128 x 128 images), heads slimmed to 128
# channels, an iteration-based schedule, COCO bbox + segm metrics on val.
# Run it through tools/demo.py (which generates the data first), or as any
# config (python tools/train.py THIS_FILE).
_base_ = './maskrcnn_fcvit_b12.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

data_root = 'data/shapes/coco/'
classes = ('circle', 'square', 'triangle')
metainfo = dict(classes=classes,
                palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75)])
img_scale = (128, 128)
channels = 128  # FPN and head width (256 on COCO)
max_iters = 600
val_interval = 200

model = dict(
    backbone=dict(
        arch='tiny',
        # from scratch: blocks start at 1e-2 of the residual, not 1e-6, so
        # the token and channel mixers learn within a few hundred steps
        layer_scale_init_value=1e-2,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 160, 320], out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, fc_out_channels=256,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(num_convs=2, in_channels=channels,
                       conv_out_channels=64, num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 filter_cfg=dict(filter_empty_gt=True, min_size=8),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# iteration-based: a fixed budget whatever the dataset size
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',
                 max_iters=max_iters, val_interval=val_interval)
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters,
         eta_min=1e-5)
]
auto_scale_lr = dict(base_batch_size=4)

default_hooks = dict(
    logger=dict(interval=20, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=val_interval, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=False, window_size=20)
randomness = dict(seed=0)  # the same run every time (up to float noise)
work_dir = './work_dirs/demo'
