# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Saving checkpoints so that a failed or killed save never leaves fewer
loadable checkpoints than before.

* :class:`AtomicLocalBackend` (mmengine file backend ``'atomic_local'``)
  writes to a temporary file in the target's folder, syncs it and renames
  it over the target;
* :class:`SafeCheckpointHook` is mmengine's ``CheckpointHook`` that saves
  through it, removes obsolete checkpoints only once the new one is in
  place, and removes the temporary files of a killed save at the next
  start.

Which checkpoint ``--resume`` continues from is :mod:`.resume`'s job.
"""
import os
import os.path as osp
import re
import tempfile
from contextlib import contextmanager
from typing import List

from mmengine.dist import is_main_process
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

#: name of :class:`AtomicLocalBackend` among mmengine's file backends
ATOMIC_BACKEND = 'atomic_local'
_TMP = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose ``put`` is atomic: the bytes go to
    ``.NAME.XXXXXXXX.tmp`` in the target's folder, are synced to disk and
    renamed over the target. A process killed mid-write leaves the previous
    file (and a temporary file, see :func:`remove_temporary_files`)."""

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


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def remove_temporary_files(folder: str) -> List[str]:
    """Delete what killed atomic writes left in ``folder``; their paths."""
    if not osp.isdir(folder):
        return []
    found = [osp.join(folder, f) for f in sorted(os.listdir(folder))
             if _TMP.match(f)]
    for path in found:
        os.remove(path)
    return found


class _DeferredRemovals:
    """A file backend that records ``remove`` / ``rmtree`` calls instead of
    running them (everything else goes to the wrapped backend)."""

    def __init__(self, backend):
        self.backend = backend
        self.calls = []

    def remove(self, path):
        self.calls.append(('remove', path))

    def rmtree(self, path):
        self.calls.append(('rmtree', path))

    def __getattr__(self, name):
        return getattr(self.backend, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, made safe against failed and killed
    saves (same arguments).

    * Local checkpoints are written atomically (the ``'atomic_local'`` file
      backend, unless ``backend_args`` says otherwise).
    * Checkpoints that ``max_keep_ckpts`` or a new best one make obsolete
      are removed only after the new checkpoint is written: a save that
      fails or is killed at any moment leaves every previous checkpoint.
    * At the start of a run, temporary files of a killed save are removed.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.backend_args is None and self.file_client_args is None and \
                '://' not in str(self.out_dir or ''):
            self.backend_args = dict(backend=ATOMIC_BACKEND)

    def before_run(self, runner) -> None:
        if not is_main_process():
            return
        folders = {runner.work_dir}
        if self.out_dir is not None and '://' not in str(self.out_dir):
            folders.add(osp.join(str(self.out_dir),
                                 osp.basename(runner.work_dir.rstrip('/'))))
        for folder in sorted(folders):
            for path in remove_temporary_files(folder):
                runner.logger.warning(f'removed {path}, left by a save that '
                                      f'was interrupted')

    @contextmanager
    def _removals_after_save(self):
        """Run the removals that a save asks for only once it succeeded
        (and never of a file it just wrote)."""
        backend = getattr(self, 'file_backend', None)  # set in before_train
        if backend is None:
            yield
            return
        self.file_backend = deferred = _DeferredRemovals(backend)
        try:
            yield
        finally:
            self.file_backend = backend
        written = {getattr(self, 'last_ckpt', None),
                   getattr(self, 'best_ckpt_path', None),
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for method, path in deferred.calls:
            if path not in written:
                getattr(backend, method)(path)

    # every save of CheckpointHook happens in one of these three
    def after_train_epoch(self, runner) -> None:
        with self._removals_after_save():
            super().after_train_epoch(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        with self._removals_after_save():
            super().after_train_iter(runner, batch_idx, data_batch, outputs)

    def after_val_epoch(self, runner, metrics) -> None:
        with self._removals_after_save():
            super().after_val_epoch(runner, metrics)
