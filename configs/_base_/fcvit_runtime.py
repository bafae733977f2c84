# What every fcvit_mm config adds to its library's runtime, whichever
# train.py starts it (ours, the library's own, `mim train`):
# * SafeResumeHook: --resume continues from the newest checkpoint that loads
#   and fits the model, naming each one skipped (an error naming each when
#   none does), with the checkpoint's seed;
# * RandomStateHook: exact resume (the random generators' states go into
#   every checkpoint and come back on --resume);
# * FiniteLossHook: a stop at the first non-finite loss, naming its likely
#   causes;
# * DataCheckHook: the data checked against the model as it is loaded
#   (num_classes, label values, files named when they fail);
# * DataLoaderWorkersHook: no DataLoader worker left behind by a rank that
#   ends or dies.
# Safe checkpoint saving (SafeCheckpointHook: atomic writes, old checkpoints
# removed only after the new one is in place) is named in
# default_hooks.checkpoint, where each library keeps it. See
# fcvit_mm/engine/ (one module per concern). A config that sets its own
# custom_hooks must list these too.
custom_hooks = [
    dict(type='SafeResumeHook'),
    dict(type='RandomStateHook'),
    dict(type='FiniteLossHook'),
    dict(type='DataCheckHook'),
    dict(type='DataLoaderWorkersHook'),
]
