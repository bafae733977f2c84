# What every fcvit_mm config adds to its library's runtime, whichever
# train.py starts it (ours, the library's own, `mim train`):
# * RandomStateHook: exact resume (the random generators' states go into
#   every checkpoint and come back on --resume);
# * FiniteLossHook: a stop at the first non-finite loss, naming its likely
#   causes;
# * DataCheckHook: the data checked against the model as it is loaded
#   (num_classes, label values, files named when they fail);
# * DataLoaderWorkersHook: no DataLoader worker left behind by a rank that
#   ends or dies.
# Safe checkpoint saving (SafeCheckpointHook: atomic writes, old checkpoints
# removed only after the new one is in place, --resume past checkpoints that
# do not load) is named in default_hooks.checkpoint, where each library keeps
# it. See fcvit_mm/engine/hooks.py, data_hooks.py, workers.py. A config that
# sets its own custom_hooks must list these too.
custom_hooks = [
    dict(type='RandomStateHook'),
    dict(type='FiniteLossHook'),
    dict(type='DataCheckHook'),
    dict(type='DataLoaderWorkersHook'),
]
