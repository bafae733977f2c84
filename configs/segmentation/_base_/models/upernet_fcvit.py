# UperNet with an FCViT backbone: mmseg's UPerHead (PPM on stride 32, FPN
# fusion, 512 channels) over the four normed stage outputs, and the usual
# auxiliary FCN head (weight 0.4) on the stride-16 output.
#
# Head norms: plain BN (not SyncBN) so that one CPU or GPU runs without
# overrides; under multi-GPU training each GPU normalises over its own
# images. For SyncBN on GPUs: --cfg-options model.decode_head.norm_cfg.type=
# SyncBN model.auxiliary_head.norm_cfg.type=SyncBN
_base_ = 'mmseg::_base_/models/upernet_r50.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

head_norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='FCViT',
        arch='b12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        layer_scale_init_value=1e-6),
    decode_head=dict(
        in_channels=[64, 128, 320, 512],
        num_classes=150,
        norm_cfg=head_norm_cfg),
    auxiliary_head=dict(
        in_channels=320, num_classes=150, norm_cfg=head_norm_cfg))
