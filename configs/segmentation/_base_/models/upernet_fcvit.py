# UperNet with an FCViT backbone: mmseg's UPerHead (PPM on stride 32, FPN
# fusion, 512 channels) over the four normed stage outputs, and the usual
# auxiliary FCN head (weight 0.4) on the stride-16 output.
#
# Head norms: SyncBN, as mmseg's UperNet recipe: under multi-GPU training
# the statistics are those of the whole batch. One-process runs get plain BN
# (mmengine's runner reverts SyncBN when it is not distributed; our tools do
# the same for CPU-distributed gloo runs).
# scopes.py first: `mmseg::` resolves on the onedl-* stack too
_base_ = ['../../../_base_/scopes.py', 'mmseg::_base_/models/upernet_r50.py']
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

head_norm_cfg = dict(type='SyncBN', requires_grad=True)
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
