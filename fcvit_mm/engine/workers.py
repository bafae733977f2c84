# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""DataLoader worker processes never outlive their rank, even a killed one.

A worker notices that its parent is gone (within 5 s), but then waits
forever to flush the batches it had queued for it: the worker of a rank
that is killed (SIGKILL, the OOM killer) stays, holding its memory.
:class:`DataLoaderWorkersHook` has the kernel (Linux) kill each worker when
the process that forked it dies.

Why a process-wide fork hook, now that a finished rank ends as any process
does (the interpreter's exit stops its workers; :mod:`.distributed` no
longer ends it with ``os._exit``, so no scan for live DataLoader iterators
is needed either): a killed rank runs no code at all, and torchrun, once
one rank has died, signals only the process groups of the ranks still
alive, so the dead rank's worker is left running. The failing case without
the hook: tests/test_dist_processes.py::test_killed_rank_leaves_no_process
(rank 1 SIGKILLed after its second iteration: its DataLoader worker stays,
orphaned) and ::test_dataloader_worker_outliving_its_process[none-kill] (one
process, SIGKILLed: its worker stays). The hook holds for the workers of
every DataLoader, however the job was launched (torchrun, srun, one
process).
"""
import ctypes
import os
import signal
import sys
import threading

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

PR_SET_PDEATHSIG = 1


_at_fork = dict(registered=False, parent=None, prctl=None)


def _before_fork() -> None:
    # only forks of the main thread: the kernel's parent-death signal
    # follows the thread that forked, which must live as long as the process
    main = threading.current_thread() is threading.main_thread()
    _at_fork['parent'] = os.getpid() if main else None


def _after_fork_in_child() -> None:
    parent, prctl = _at_fork['parent'], _at_fork['prctl']
    if parent is None or prctl is None:
        return
    prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def children_die_with_process() -> bool:
    """From now on, every process this process forks from its main thread
    (DataLoader workers with the 'fork' start method, mmengine's default)
    is killed by the kernel when this process dies, however it dies
    (Linux; elsewhere nothing happens).

    Returns:
        bool: whether that is in place.
    """
    if _at_fork['registered']:
        return True
    if not sys.platform.startswith('linux'):
        return False
    # resolved here: loading a library in a forked child can deadlock
    _at_fork['prctl'] = ctypes.CDLL(None, use_errno=True).prctl
    os.register_at_fork(before=_before_fork,
                        after_in_child=_after_fork_in_child)
    _at_fork['registered'] = True
    return True


@HOOKS.register_module()
class DataLoaderWorkersHook(Hook):
    """The DataLoader workers of the run die with their process, even when
    it is killed (see the module doc).

    Set up when the hook is built, with the runner: before any dataloader
    starts its workers (the iteration-based loop starts them when it is
    built, before ``before_run``).
    """

    priority = 'VERY_HIGH'

    def __init__(self):
        children_die_with_process()
