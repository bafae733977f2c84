# RetinaNet + FPN with an FCViT backbone, set up as usual for such backbones:
# the FPN starts at stride 8 (C3) and builds P6/P7 with extra convolutions on
# the last backbone output. The stride-4 output is not requested from the
# backbone (out_indices 1, 2, 3), so every parameter receives a gradient and
# DDP needs no ``find_unused_parameters``. This is the same network as
# ``in_channels=[64, 128, 320, 512], start_level=1`` on all four outputs,
# less the unused stride-4 output norm.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='FCViT',
        arch='b12',
        out_indices=(1, 2, 3),
        drop_path_rate=0.,
        layer_scale_init_value=1e-6),  # the reference's value for detection
    neck=dict(
        in_channels=[128, 320, 512],
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5))
