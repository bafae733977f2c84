# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""DataLoader worker processes never outlive their run.

A worker notices that its parent is gone (within 5 s), but then waits
forever to flush the batches it had queued for it, so a rank that ends
with ``os._exit`` (as our tools do after a distributed run) or is killed
leaves its workers behind, holding their memory. Two remedies:

* :func:`shutdown_dataloader_workers` shuts the process's DataLoader
  iterators down, as their finalisers would; the tools call it before
  ending a distributed rank;
* :class:`DataLoaderWorkersHook` has the kernel (Linux) kill each worker
  when the process that forked it dies, so that nothing is left even when
  a rank is killed.
"""
import ctypes
import gc
import os
import signal
import sys
import threading

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from fcvit_mm.internals import private

PR_SET_PDEATHSIG = 1


def shutdown_dataloader_workers() -> int:
    """Shut down every multi-process DataLoader iterator of this process
    (its workers and pin-memory thread).

    Returns:
        int: how many iterators were shut down.
    """
    iterator_type = private(
        'torch.utils.data.dataloader:_MultiProcessingDataLoaderIter')
    private('torch.utils.data.dataloader:_MultiProcessingDataLoaderIter'
            '._shutdown_workers')
    count = 0
    for obj in gc.get_objects():
        # type(), not isinstance: the latter asks every object for its
        # __class__, which makes deprecated proxies (torch's reduce_op) warn
        if issubclass(type(obj), iterator_type) and \
                not getattr(obj, '_shutdown', True):
            obj._shutdown_workers()
            count += 1
    return count


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
