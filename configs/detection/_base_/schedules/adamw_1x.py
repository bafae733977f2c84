# 1x schedule (12 epochs, lr x0.1 after epochs 8 and 11, linear warm-up over
# the first 500 iterations) with the reference's optimiser: AdamW, lr 2e-4,
# weight decay 1e-4, for a total batch of 32 (8 GPUs x 4 images).
# `--auto-scale-lr` rescales the lr linearly for another total batch.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4))

auto_scale_lr = dict(enable=False, base_batch_size=32)
