# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Checkpoints that survive a kill: atomic writes and a resume that skips
corrupt files.

* :class:`AtomicLocalBackend` replaces mmengine's local file backend (the one
  ``save_checkpoint`` writes through): bytes go to a temporary file in the
  same folder, are flushed to disk, and the temporary file is renamed over
  the target. A process killed mid-write leaves the previous checkpoint (or
  none), never a truncated one.
* :func:`find_resumable_checkpoint` is what ``--resume`` (no path) uses: the
  checkpoint named by ``last_checkpoint`` if it loads, else the newest
  checkpoint in the work dir that does, with a warning naming each file it
  had to skip.
"""
import os
import os.path as osp
import re
import tempfile
from typing import List, Optional, Tuple

from mmengine.fileio.backends import LocalBackend, register_backend

from fcvit_mm.utils.checkpoint import CheckpointError, safe_load


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose ``put`` is atomic (write, fsync,
    rename)."""

    def put(self, obj: bytes, filepath) -> None:
        filepath = os.fspath(filepath)
        folder = osp.dirname(osp.abspath(filepath))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f'.{osp.basename(filepath)}.', suffix='.tmp', dir=folder)
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise


_INSTALLED = False


def install_atomic_checkpoint_writes() -> None:
    """Make mmengine write local files (checkpoints) atomically (once)."""
    global _INSTALLED
    if not _INSTALLED:
        register_backend('local', AtomicLocalBackend, force=True,
                         prefixes='')
        _INSTALLED = True


_NUMBER = re.compile(r'(\d+)')


def _checkpoint_order(path: str) -> Tuple[float, float]:
    """Newest first: by the number in the name (epoch_N / iter_N), then by
    modification time."""
    numbers = _NUMBER.findall(osp.basename(path))
    return (float(numbers[-1]) if numbers else -1.0, osp.getmtime(path))


def checkpoint_candidates(work_dir: str) -> List[str]:
    """Checkpoints of a work dir, the one ``last_checkpoint`` names first,
    then the others from newest to oldest."""
    found = [
        osp.join(work_dir, f) for f in os.listdir(work_dir)
        if f.endswith('.pth') and not f.startswith('.')
    ] if osp.isdir(work_dir) else []
    found.sort(key=_checkpoint_order, reverse=True)
    last_file = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last_file):
        with open(last_file) as f:
            named = f.read().strip()
        if named:
            if not osp.isabs(named):
                named = osp.join(work_dir, osp.basename(named))
            found = [named] + [p for p in found
                               if osp.abspath(p) != osp.abspath(named)]
    return found


def find_resumable_checkpoint(work_dir: str,
                              logger=None) -> Tuple[Optional[str], dict]:
    """The newest checkpoint of ``work_dir`` that loads.

    Returns:
        (path, meta): ``(None, {})`` if the work dir holds none.
    """
    for path in checkpoint_candidates(work_dir):
        try:
            ckpt = safe_load(path)
            if not isinstance(ckpt, dict) or 'state_dict' not in ckpt:
                raise CheckpointError(f'{path!r} holds no "state_dict"')
        except (CheckpointError, FileNotFoundError) as e:
            if logger is not None:
                logger.warning(f'cannot resume from {path}: {e}; trying the '
                               f'next older checkpoint')
            continue
        return path, dict(ckpt.get('meta') or {})
    return None, {}
