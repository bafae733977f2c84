# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""What ``tools/train.py`` and ``tools/test.py`` share: loading a config,
telling which library it belongs to, and CPU-only distributed start-up."""
import logging
import os
from typing import List, Optional, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from .dist_errors import note_timeout
from .workers import shutdown_dataloader_workers

#: default_scope -> the library whose tools the config follows
TASK_LIBRARIES = {
    'mmdet': 'detection',
    'mmseg': 'segmentation',
    'mmpretrain': 'classification',
}


#: top-level keys read by the tools or the runner beyond ``Runner``'s
#: arguments
TOOL_KEYS = ('runner_type', 'model_wrapper_cfg', 'find_unused_parameters',
             'compile', 'strategy', 'custom_imports', 'tta_model',
             'tta_pipeline')
#: variables the libraries' configs define for their own use, which must
#: not be taken for misspelt keys (``test_pipeline`` is close to
#: ``tta_pipeline``)
CONFIG_VARIABLES = ('train_pipeline', 'test_pipeline', 'val_pipeline',
                    'dataset_type', 'data_root', 'backend_args', 'metainfo',
                    'classes', 'img_scale', 'img_scales', 'crop_size',
                    'norm_cfg', 'data_preprocessor', 'checkpoint',
                    'checkpoint_file', 'pretrained')


def known_config_keys() -> List[str]:
    """The top-level config keys the runner and our tools act on."""
    import inspect

    from mmengine.runner import Runner
    params = inspect.signature(Runner.__init__).parameters
    return sorted({p for p in params if p != 'self'} | set(TOOL_KEYS))


def misspelt_keys(cfg: Config) -> List[Tuple[str, str]]:
    """``(key, closest known key)`` for each top-level key of ``cfg`` that
    nothing reads but is close to a key that something does (e.g.
    ``optim_wraper`` -> ``optim_wrapper``): a misspelt key is silently
    ignored otherwise."""
    import difflib
    known = known_config_keys()
    found = []
    for key in cfg.keys():
        if key in known or key in CONFIG_VARIABLES or key.startswith('_'):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close:
            found.append((key, close[0]))
    return found


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """``Config.fromfile`` with a clear error for a path that is not there,
    and a warning for each top-level key that looks misspelt."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path!r}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    for key, close in misspelt_keys(cfg):
        print_log(
            f'config {path}: unknown top-level key {key!r} (ignored); did '
            f'you mean {close!r}?', logger='current', level=logging.WARNING)
    return cfg


def task_of(cfg: Config) -> str:
    """The library a config belongs to, from its ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASK_LIBRARIES:
        raise ValueError(
            f'config has default_scope={scope!r}; fcvit_mm tools handle '
            f'{sorted(TASK_LIBRARIES)} (mmdet, mmseg, mmpretrain)')
    return scope


def init_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Start a gloo process group when launched distributed without a GPU.

    mmengine 0.10's ``init_dist`` calls ``torch.cuda.set_device`` and its DDP
    wrapper passes ``device_ids``; both fail on CPU. Initialising the process
    group here makes the runner skip its own initialisation, and
    ``device_ids=None`` makes DDP work on CPU tensors. SyncBN norms of the
    model become BN (as in a one-process run): they need CUDA.

    Returns:
        bool: whether the CPU path was taken.
    """
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
    note_timeout(timeout)  # for the message if a rank stops answering
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(f'launcher {launcher!r} needs a GPU; on CPU use '
                         f'"pytorch" (torchrun) or "slurm"')
    if launcher == 'slurm':  # map SLURM's variables to torch's
        os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
        os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
        os.environ.setdefault('LOCAL_RANK', os.environ['SLURM_LOCALID'])
        os.environ.setdefault('MASTER_PORT', '29500')
    if not torch_dist.is_initialized():
        kwargs = {}
        if timeout is not None:
            import datetime
            kwargs['timeout'] = datetime.timedelta(seconds=timeout)
        torch_dist.init_process_group(backend='gloo', **kwargs)
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    from .sync_bn import revert_sync_bn_cfg
    revert_sync_bn_cfg(cfg)  # SyncBN needs CUDA
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True


def shutdown_distributed(exit_process: bool = False) -> bool:
    """End a distributed run cleanly: wait for every rank, then destroy the
    process group.

    mmengine leaves the group to the interpreter's exit, where the order in
    which torch's C++ objects are torn down is not fixed; with gloo on CPU a
    rank was seen to abort there ("terminate called without an active
    exception", exit -6) after a run that had finished. The tools call this
    once the runner is done, with ``exit_process=True``: after the group is
    gone, logs and standard streams are flushed and the process ends with
    status 0 without the interpreter's teardown. The DataLoader workers,
    which that teardown would have stopped, are shut down first (they would
    stay behind otherwise, see :mod:`fcvit_mm.engine.workers`).

    Returns:
        bool: whether there was a process group to destroy (only returns
        when ``exit_process`` is False or there was none).
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    shutdown_dataloader_workers()
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    if exit_process:
        import logging
        import sys
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return True


def _visualizer_exists(cls, name: str) -> bool:
    # every ManagerMixin class keeps its own instances: look at subclasses
    if name in getattr(cls, '_instance_dict', {}):
        return True
    return any(_visualizer_exists(c, name) for c in cls.__subclasses__())


def fresh_visualizer_name(cfg: Config) -> None:
    """Give the config's visualizer a name no visualizer in this process has.

    The libraries' runtimes name it (``name='visualizer'``), and mmengine
    returns an existing instance of that name instead of building a new one,
    so a second run in the same process (``tools/train.py``'s ``main`` called
    twice) would write its scalars into the first run's folder.
    """
    vis = cfg.get('visualizer')
    if not isinstance(vis, dict) or not vis.get('name'):
        return
    from mmengine.visualization import Visualizer
    base, name, i = vis['name'], vis['name'], 0
    while _visualizer_exists(Visualizer, name):
        i += 1
        name = f'{base}_{i}'
    vis['name'] = name
