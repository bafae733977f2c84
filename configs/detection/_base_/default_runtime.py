# mmdet's runtime (logging every 50 iterations, a checkpoint every epoch,
# the local visualizer).
# fcvit_runtime: the hooks that keep a run honest, whichever train.py runs it
_base_ = [
    'mmdet::_base_/default_runtime.py',
    '../../_base_/fcvit_runtime.py',
]

# a different seed on each rank, so that random augmentation never repeats
# across GPUs (mmengine keeps the samplers' shuffling in sync); set
# randomness.seed for a reproducible run
randomness = dict(seed=None, deterministic=False, diff_rank_seed=True)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
