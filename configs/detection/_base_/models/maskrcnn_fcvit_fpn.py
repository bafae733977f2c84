# Mask R-CNN + FPN with an FCViT backbone: mmdet's standard R-50 Mask R-CNN
# with the ResNet replaced. The four stage outputs (strides 4, 8, 16, 32)
# feed the FPN; widths are those of FCViT-B12/B24/B48.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='FCViT',
        arch='b12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.,
        layer_scale_init_value=1e-6),  # the reference's value for detection
    neck=dict(in_channels=[64, 128, 320, 512]))
