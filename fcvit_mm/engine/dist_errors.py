# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Name the rank that stopped answering when a collective times out.

A rank that hangs (stopped, deadlocked, swapping) makes the others wait in
their next collective for the process group's timeout, which the config
sets: ``env_cfg.dist_cfg.timeout`` (seconds; torch's default is 30
minutes). gloo then reports only ``Timed out waiting ...ms for recv
operation``, without saying on whom. :func:`run_tool` catches that error
in each rank that is still alive; those ranks check in with the job's
key-value store (torchrun's, which lives outside the ranks) and the ranks
that do not check in are named as the ones that stopped answering.
"""
import logging
import os
import time
from typing import Callable, List, Optional

import torch.distributed as torch_dist
from mmengine.logging import print_log

#: seconds the live ranks wait for one another to check in
CHECK_IN_WAIT = 5.0
_timeout: Optional[float] = None


def note_timeout(seconds: Optional[float]) -> None:
    """Remember ``env_cfg.dist_cfg.timeout`` for the messages."""
    global _timeout
    _timeout = seconds


def _is_timeout(exc: BaseException) -> bool:
    text = str(exc).lower()
    return 'timed out' in text or 'timeout' in text


def unanswered_ranks(wait: float = CHECK_IN_WAIT) -> Optional[List[int]]:
    """Check this rank in with the job's store and return the ranks that
    have not checked in after ``wait`` seconds (None if there is no store
    to ask)."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store
        store = _get_default_store()
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


def explain_timeout(exc: BaseException) -> Optional[str]:
    """The message for a collective that timed out in this rank, or None
    when ``exc`` is not that."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()) or \
            not _is_timeout(exc):
        return None
    limit = 'env_cfg.dist_cfg.timeout' + \
        (f'={_timeout:g} s' if _timeout is not None else ' (unset: torch\'s '
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
    """Run a tool's ``main``; if a collective times out, log which rank
    stopped answering before the error ends the process, and after a
    successful distributed run end the process cleanly
    (:func:`~fcvit_mm.engine.launch.shutdown_distributed`)."""
    from .launch import shutdown_distributed
    try:
        main()
    except Exception as e:
        message = explain_timeout(e)
        if message is not None:
            print_log(message, logger='current', level=logging.WARNING)
            e.add_note(message)
        raise
    shutdown_distributed(exit_process=True)
