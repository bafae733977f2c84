# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Distributed runs: start-up without a GPU, SyncBN there, a clean end, and
a timeout that names the rank that stopped answering.

* **CPU start-up.** mmengine 0.10's ``init_dist`` and DDP wrapper assume
  CUDA; :func:`init_cpu_distributed` starts a gloo process group itself and
  makes DDP work on CPU tensors.
* **SyncBN.** torch's ``SyncBatchNorm`` synchronises only CUDA tensors;
  :func:`revert_sync_bn_cfg` makes a CPU-distributed run build BN, as
  mmengine does for a one-process run.
* **A clean end.** :func:`shutdown_distributed` destroys the process group
  before the interpreter's teardown, where it could abort a rank.
* **Timeouts.** A rank that hangs makes the others wait in their next
  collective for ``env_cfg.dist_cfg.timeout`` (seconds; torch's default is
  30 minutes), after which gloo says only ``Timed out waiting ...ms``.
  :func:`run_tool` catches that error in each live rank; those ranks check
  in with the job's key-value store (torchrun's, which lives outside the
  ranks) and the ranks that do not check in are named.
"""
import datetime
import gc
import logging
import os
import sys
import time
from typing import Callable, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from fcvit_mm.internals import private
from .user_errors import (USER_ERROR_EXIT, config_of_error,
                          debug_requested, report_user_error, user_error)
from .warning_filters import quiet_third_party_warnings

#: seconds the live ranks wait for one another to check in
CHECK_IN_WAIT = 5.0


def dist_timeout(cfg: Optional[Config]) -> Optional[float]:
    """The config's ``env_cfg.dist_cfg.timeout`` (seconds), or None."""
    env_cfg = (cfg.get('env_cfg') if cfg is not None else None) or {}
    return (env_cfg.get('dist_cfg') or {}).get('timeout')


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
    timeout = dist_timeout(cfg)
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
            kwargs['timeout'] = datetime.timedelta(seconds=timeout)
        torch_dist.init_process_group(backend='gloo', **kwargs)
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    revert_sync_bn_cfg(cfg)  # SyncBN needs CUDA
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True


def shutdown_distributed() -> bool:
    """End a distributed run cleanly: wait for every rank, then destroy the
    process group.

    mmengine leaves the group to the interpreter's exit, where the order in
    which torch's C++ objects are torn down is not fixed; with gloo on CPU a
    rank was seen to abort there ("terminate called without an active
    exception", exit -6) after a run that had finished. The tools call this
    once the runner is done and collected (its DDP wrapper holds the
    group); the process then ends as any other, and its DataLoader workers
    with it (tests/test_dist_processes.py: a run that ends mid-epoch leaves
    no process and exits with status 0).

    Returns:
        bool: whether there was a process group to destroy.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    return True


def _is_timeout(exc: BaseException) -> bool:
    text = str(exc).lower()
    return 'timed out' in text or 'timeout' in text


def unanswered_ranks(wait: float = CHECK_IN_WAIT) -> Optional[List[int]]:
    """Check this rank in with the job's store and return the ranks that
    have not checked in after ``wait`` seconds (None if there is no store
    to ask)."""
    try:
        store = private(
            'torch.distributed.distributed_c10d:_get_default_store')()
        rank, world = torch_dist.get_rank(), torch_dist.get_world_size()
        prefix = 'fcvit_mm/alive/' + os.environ.get(
            'TORCHELASTIC_RESTART_COUNT', '0') + '/'
        store.set(f'{prefix}{rank}', '1')
        deadline = time.monotonic() + wait
        while True:
            missing = [r for r in range(world)
                       if not store.check([f'{prefix}{r}'])]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.2)
    except Exception:  # the store may be gone too; the message says less
        return None


def explain_timeout(exc: BaseException,
                    timeout: Optional[float] = None) -> Optional[str]:
    """The message for a collective that timed out in this rank (after the
    run's ``env_cfg.dist_cfg.timeout``, ``timeout`` seconds; None: torch's
    default), or None when ``exc`` is not that."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()) or \
            not _is_timeout(exc):
        return None
    limit = 'env_cfg.dist_cfg.timeout' + \
        (f'={timeout:g} s' if timeout is not None else ' (unset: torch\'s '
         'default, 30 minutes)')
    missing = unanswered_ranks()
    if missing:
        who = 'stopped answering: ' + ', '.join(f'rank {r}' for r in missing)
    else:
        who = 'every rank still answers the job\'s store (a collective ' \
            'mismatch, or one rank is much slower)'
    return (f'rank {torch_dist.get_rank()}: a collective got no answer '
            f'within {limit}; {who}')


def run_tool(main: Callable[[], object]) -> None:
    """Run a tool's ``main``. A user error (:mod:`.user_errors`) ends the
    process with status 1 and its short message, once; if a collective
    times out, the rank that stopped answering is logged before the error
    ends the process; a successful distributed run ends cleanly
    (:func:`shutdown_distributed`). The run's config is what the error
    carries (:func:`~.user_errors.config_for_errors`)."""
    quiet_third_party_warnings()
    try:
        main()
    except Exception as e:
        cfg = config_of_error(e)
        message = explain_timeout(e, dist_timeout(cfg))
        if message is not None:
            print_log(message, logger='current', level=logging.WARNING)
            e.add_note(message)
            raise
        message = user_error(e, cfg)
        if message is None or debug_requested():
            raise
        report_user_error(message)
        sys.exit(USER_ERROR_EXIT)
    gc.collect()  # the runner (its cycles), and with it the DDP wrapper
    shutdown_distributed()


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
        print_log(f'CPU-distributed run: {count} SyncBN setting(s) of the '
                  f'config replaced by BN (SyncBN needs CUDA)',
                  logger='current')
    return count
