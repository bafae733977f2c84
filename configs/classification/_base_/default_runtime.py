# mmpretrain's runtime: a checkpoint and a validation every epoch, the
# universal visualizer. (custom_imports for fcvit_mm comes with the model
# _base_: mmengine allows a key in only one of a config's bases.)
# fcvit_runtime: the hooks that keep a run honest, whichever train.py runs it
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../../_base_/fcvit_runtime.py',
]
# keep the best top-1 checkpoint besides the latest ones
default_hooks = dict(
    checkpoint=dict(
        type='SafeCheckpointHook', interval=1, max_keep_ckpts=3,
        save_best='auto'))

# a different seed on each rank, so that random augmentation never repeats
# across GPUs (mmengine keeps the samplers' shuffling in sync); set
# randomness.seed for a reproducible run
randomness = dict(seed=None, deterministic=False, diff_rank_seed=True)
