# The standard 160k-iteration ADE20K UperNet schedule that other backbones
# publish (Swin's recipe): AdamW lr 6e-5, betas (0.9, 0.999), weight decay
# 0.01, 1500 iterations of linear warm-up, then poly decay with power 1.0 to
# 0, for a total batch of 16 (8 GPUs x 2 images).
#
# Parameter-wise settings: no weight decay on norms, biases and other 1-D
# parameters (FCViT's layer scales and global-context rescale_weight /
# rescale_bias), the counterparts of what Swin's recipe exempts (norms and
# position tables). One learning rate for all layers: no layer-wise decay,
# as in Swin's recipe (ConvNeXt's layer decay is tied to mmseg's
# ConvNeXt-only constructor). The backbone comes from ImageNet weights; the
# heads are trained from scratch at the same rate.
# scopes.py first: `mmseg::` resolves on the onedl-* stack too
_base_ = ['../../../_base_/scopes.py',
          'mmseg::_base_/schedules/schedule_160k.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# mmseg's checkpoint settings, saved by our CheckpointHook that no failed or
# killed save loses a checkpoint to (see fcvit_mm/engine/checkpoints.py)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
