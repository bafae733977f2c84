# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Loading checkpoints without running code from them.

A checkpoint is a file from the internet. Every load in this project goes
through torch's ``weights_only=True`` unpickler, which only rebuilds tensors,
plain containers and the few types allowlisted here:

* what mmengine 0.10 writes into a training checkpoint (its ``HistoryBuffer``
  in the message hub, numpy arrays, dtypes and scalars);
* ``argparse.Namespace``, which the reference's timm training script stores
  under ``args``.

No generic callable (``getattr``, ``eval``, ...) is allowlisted. mmengine's
``HistoryBuffer`` pickles its statistics methods (``min``, ``max``, ...) as
``getattr(HistoryBuffer, 'min')``; those are class-level defaults that its
``__setstate__`` restores anyway, so :func:`register_safe_globals` makes
buffers pickle without them, and checkpoints need no ``getattr``.
:func:`register_safe_globals` runs when :mod:`fcvit_mm` is imported, so the
libraries' own loaders (``init_detector``, mmdet/mmseg/mmpretrain
``tools/test.py``, ``--resume``) read mmengine's checkpoints on torch >= 2.6,
whose ``torch.load`` defaults to ``weights_only=True``.
"""
import argparse
import io
import os
import pickle
from typing import Any, List

import torch


def _numpy_globals() -> List[Any]:
    import numpy as np
    try:  # numpy >= 1.25 moved the reconstruct helpers to numpy._core
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy < 1.25
        from numpy.core import multiarray
    items = [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype]
    # the concrete dtype classes (numpy >= 1.25: np.dtypes.Float64DType, ...)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        items += [getattr(dtypes, n) for n in dir(dtypes)
                  if n.endswith('DType') and isinstance(getattr(dtypes, n), type)]
    # numpy < 2 pickles multiarray functions under numpy.core.multiarray,
    # numpy >= 2 under numpy._core.multiarray; register the name used here.
    return items


def safe_globals() -> List[Any]:
    """The allowlist: plain data types only."""
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer, argparse.Namespace] + _numpy_globals()


_REGISTERED = False


def _history_buffer_getstate(self) -> dict:
    """``HistoryBuffer`` state without its (class-level) statistics methods,
    which would pickle as ``getattr`` calls."""
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


def register_safe_globals() -> None:
    """Add :func:`safe_globals` to torch's weights-only allowlist and make
    mmengine's ``HistoryBuffer`` pickle as plain data (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from mmengine.logging import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(safe_globals())
    _REGISTERED = True


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be (safely) loaded."""


def safe_load(filename: str, map_location: Any = 'cpu') -> Any:
    """``torch.load`` a local path or URL with ``weights_only=True``.

    Raises:
        FileNotFoundError: the path does not exist (the message names it).
        CheckpointError: the file is corrupt, not a torch checkpoint, or
            holds objects outside the allowlist (e.g. code to execute).
    """
    register_safe_globals()
    filename = os.fspath(filename)
    if '://' in filename:
        from mmengine.fileio import get
        source = io.BytesIO(get(filename))
    else:
        filename = os.path.expanduser(filename)
        if not os.path.isfile(filename):
            raise FileNotFoundError(
                f'checkpoint file not found: {filename!r}')
        source = filename
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f'refusing to load checkpoint {filename!r}: it holds an object '
            f'that is not plain data (weights-only load failed: '
            f'{str(e).splitlines()[0]}). Checkpoints are never allowed to run '
            f'code; if this file comes from a trusted source, re-save its '
            f'state dict with plain types.') from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(
            f'cannot read checkpoint {filename!r}: the file is corrupt, '
            f'truncated or not a PyTorch checkpoint ({type(e).__name__}: '
            f'{str(e).splitlines()[0] if str(e) else ""})') from None
