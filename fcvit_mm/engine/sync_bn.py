# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""SyncBN in CPU-distributed runs.

The segmentation heads use SyncBN as the reference's recipe does. torch's
``SyncBatchNorm`` synchronises its statistics only on CUDA tensors: in
training under a process group on CPU (the gloo runs of ``dist_train.sh``
on a machine without a GPU) it raises. mmengine's runner turns SyncBN back
into BN when a run is not distributed; :func:`revert_sync_bn_cfg` does the
same for the CPU-distributed path, on the config, before the model exists.
"""
from mmengine.config import Config

#: norm types that synchronise across processes (torch's and mmcv's)
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')


def _revert(node) -> int:
    count = 0
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _revert(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _revert(value)
    return count


def revert_sync_bn_cfg(cfg: Config) -> int:
    """Make ``cfg.model`` build plain BN wherever it asks for SyncBN, and
    drop a ``sync_bn`` request (the runner's BN -> SyncBN conversion), in
    place. Each process then normalises over its own images, as it would
    in a one-process run.

    Returns:
        int: how many norm settings were changed.
    """
    count = _revert(cfg.get('model', {}))
    if cfg.get('sync_bn'):
        cfg.sync_bn = None
        count += 1
    if count:
        from mmengine.logging import print_log
        print_log(f'CPU-distributed run: {count} SyncBN setting(s) of the '
                  f'config replaced by BN (SyncBN needs CUDA)',
                  logger='current')
    return count
