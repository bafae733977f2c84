# The reference's ImageNet schedule: 300 epochs, AdamW (betas 0.9 / 0.999,
# eps 1e-8) with lr 1e-3 at a total batch of 1024 (auto_scale_lr scales it
# linearly: lr = batch / 1024 * 1e-3), weight decay 0.05 on weights only
# (none on norms, biases and other 1-D parameters: FCViT's layer scales and
# global-context rescale_weight / rescale_bias, exactly timm's rule of
# "no decay for ndim <= 1"), 5 epochs of linear warm-up from 1e-6, then a
# cosine decay to 1e-5, updated every iteration.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW',
        lr=1e-3,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=5,
        end=300,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# base_batch_size: the total batch the lr above is meant for (8 x 128)
auto_scale_lr = dict(base_batch_size=1024)
