# mmpretrain's runtime: a checkpoint and a validation every epoch, the
# universal visualizer. (custom_imports for fcvit_mm comes with the model
# _base_: mmengine allows a key in only one of a config's bases.)
_base_ = 'mmpretrain::_base_/default_runtime.py'
# keep the best top-1 checkpoint besides the latest ones
default_hooks = dict(
    checkpoint=dict(
        type='SafeCheckpointHook', interval=1, max_keep_ckpts=3,
        save_best='auto'))

# a different seed on each rank, so that random augmentation never repeats
# across GPUs (mmengine keeps the samplers' shuffling in sync); set
# randomness.seed for a reproducible run
randomness = dict(seed=None, deterministic=False, diff_rank_seed=True)

# The run's guarantees travel with the config, whichever train.py starts it
# (ours, the library's own, `mim train`); see fcvit_mm/engine/hooks.py:
# exact resume (random generators' states in every checkpoint), a stop at the
# first non-finite loss naming its likely causes, and checkpoints that no
# failed or killed save loses (atomic writes, old ones removed only after the
# new one is in place, --resume past checkpoints that do not load). Also:
# data checked against the model as it is loaded (num_classes, label values,
# files named when they fail) and no DataLoader worker left behind
# (fcvit_mm.engine.data_hooks, .workers). A config that sets custom_hooks
# must list these too.
custom_hooks = [
    dict(type='RandomStateHook'),
    dict(type='FiniteLossHook'),
    dict(type='DataCheckHook'),
    dict(type='DataLoaderWorkersHook'),
]
