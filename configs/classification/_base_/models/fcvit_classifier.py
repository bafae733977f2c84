# ImageNet classifier with an FCViT backbone, as the reference builds it:
# the last stage's output, GroupNorm-normed (the backbone's norm3, which plays
# the reference's final norm), then global average pooling and a linear head.
# The layer scales start at 1e-5 (the reference's classification value).
# Loss: label smoothing 0.1, and Mixup (alpha 0.8) / CutMix (alpha 1.0), one
# of the two per batch, as timm's mixup with switch probability 0.5.
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='FCViT',
        arch='b12',
        out_indices=(3, ),
        drop_path_rate=0.1,
        layer_scale_init_value=1e-5,
        init_cfg=None),  # None: the reference's from-scratch initialisation
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        cal_acc=False),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]),
)
