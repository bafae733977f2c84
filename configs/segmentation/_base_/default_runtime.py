# mmseg's runtime: iteration-based logging every 50 iterations, the local
# segmentation visualizer. (custom_imports for fcvit_mm comes with the model
# _base_: mmengine allows a key in only one of a config's bases.)
# fcvit_runtime: the hooks that keep a run honest, whichever train.py runs it
# (scopes.py first: `mmseg::` resolves on the onedl-* stack too)
_base_ = [
    '../../_base_/scopes.py',
    'mmseg::_base_/default_runtime.py',
    '../../_base_/fcvit_runtime.py',
]

# a different seed on each rank, so that random augmentation never repeats
# across GPUs (mmengine keeps the samplers' shuffling in sync); set
# randomness.seed for a reproducible run
randomness = dict(seed=None, deterministic=False, diff_rank_seed=True)
# (SafeCheckpointHook, the safe checkpoint saving, is named in the schedules:
# mmseg keeps default_hooks there, and mmengine allows a key in only one of a
# config's bases.)
