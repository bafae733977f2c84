# The reference's Semantic FPN schedule: 40k iterations, AdamW lr 2e-4,
# weight decay 1e-4 (on all parameters, as the reference), poly decay with
# power 0.9 to 0, for a total batch of 32 (8 GPUs x 4 images).
# `--auto-scale-lr` rescales the lr linearly for another total batch.
# scopes.py first: `mmseg::` resolves on the onedl-* stack too
_base_ = ['../../../_base_/scopes.py',
          'mmseg::_base_/schedules/schedule_40k.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [
    dict(
        type='PolyLR',
        power=0.9,
        eta_min=0.0,
        begin=0,
        end=40000,
        by_epoch=False)
]
auto_scale_lr = dict(enable=False, base_batch_size=32)
# mmseg's checkpoint settings, saved by our CheckpointHook that no failed or
# killed save loses a checkpoint to (see fcvit_mm/engine/checkpoints.py)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
