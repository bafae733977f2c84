# mmseg's runtime: iteration-based logging every 50 iterations, the local
# segmentation visualizer. (custom_imports for fcvit_mm comes with the model
# _base_: mmengine allows a key in only one of a config's bases.)
_base_ = 'mmseg::_base_/default_runtime.py'

# a different seed on each rank, so that random augmentation never repeats
# across GPUs (mmengine keeps the samplers' shuffling in sync); set
# randomness.seed for a reproducible run
randomness = dict(seed=None, deterministic=False, diff_rank_seed=True)

# data checked against the model as it is loaded (num_classes, label values,
# files named when they fail) and no DataLoader worker left behind, whichever
# train.py / test.py runs the config (fcvit_mm.engine.data_hooks, .workers)
custom_hooks = [dict(type='DataCheckHook'), dict(type='DataLoaderWorkersHook')]
