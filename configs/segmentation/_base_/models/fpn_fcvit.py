# Semantic FPN with an FCViT backbone: the four normed stage outputs
# (strides 4, 8, 16, 32) feed mmseg's FPN (256 channels) and FPNHead
# (128 channels), as in the reference's Semantic FPN configs.
#
# Decode-head norm: SyncBN, as the reference (mmseg's fpn_r50 base): under
# multi-GPU training the statistics are those of the whole batch (8 x 4
# crops). One-process runs (one GPU or CPU) get plain BN layers: mmengine's
# runner reverts SyncBN when it is not distributed, and our tools do the
# same for CPU-distributed (gloo) runs, where SyncBN cannot work.
# scopes.py first: `mmseg::` resolves on the onedl-* stack too
_base_ = ['../../../_base_/scopes.py', 'mmseg::_base_/models/fpn_r50.py']
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

head_norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='FCViT',
        arch='b12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.,
        layer_scale_init_value=1e-6),  # the reference's dense-prediction value
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150, norm_cfg=head_norm_cfg))
