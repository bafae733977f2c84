# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Everything about FCViT checkpoints, in one module.

* **Safe loading.** Every load in this project goes through torch's
  ``weights_only=True`` unpickler (:func:`safe_load`), which only rebuilds
  tensors, plain containers and the few types allowlisted here: what
  mmengine 0.10 writes into a training checkpoint (its ``HistoryBuffer`` in
  the message hub, numpy arrays, dtypes and scalars) and
  ``argparse.Namespace``, which the reference's timm training script stores
  under ``args``. No generic callable (``getattr``, ``eval``, ...) is
  allowlisted. mmengine's ``HistoryBuffer`` pickles its statistics methods
  as ``getattr(HistoryBuffer, 'min')``; those are class-level defaults that
  its ``__setstate__`` restores anyway, so :func:`register_safe_globals`
  makes buffers pickle without them. It runs when :mod:`fcvit_mm` is
  imported, so the libraries' own loaders read mmengine's checkpoints on
  torch >= 2.6 (whose ``torch.load`` defaults to ``weights_only=True``).
* **One loading rule.** :class:`~fcvit_mm.models.FCViT` carries
  :func:`fit_checkpoint` as a ``load_state_dict`` pre-hook, so whichever
  door a checkpoint comes in by (``init_cfg``, ``load_from``, mmengine's
  ``load_checkpoint``, ``init_detector`` / ``init_model`` / ``get_model``,
  the libraries' ``tools/test.py``), the reference's layout is renamed to
  ours, and a checkpoint whose tensors do not fit (another variant, or one
  holding few of the backbone's weights) is an error, never a silent load
  into random weights. A few missing or extra keys stay a warning.
* **checkpoint=None.** A ``Pretrained`` init config without a checkpoint
  means "train from scratch" (:func:`is_empty_pretrained`), with a warning.
* **Atomic writes.** :class:`AtomicLocalBackend` (mmengine file backend
  ``'atomic_local'``, chosen by :class:`~fcvit_mm.engine.hooks.
  SafeCheckpointHook`) writes to a temporary file, syncs and renames it.
* **Resume.** :func:`find_resumable_checkpoint` picks the newest checkpoint
  of a work dir that loads (and fits the model), naming each one skipped.
"""
import argparse
import io
import os
import os.path as osp
import pickle
import re
import tempfile
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.fileio.backends import LocalBackend, register_backend


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
    except Exception as e:  # the unpickler fails in many ways on garbage
        raise CheckpointError(
            f'cannot read checkpoint {filename!r}: the file is corrupt, '
            f'truncated or not a PyTorch checkpoint ({type(e).__name__}: '
            f'{str(e).splitlines()[0] if str(e) else ""})') from None


# --------------------------------------------------------------------------
# layouts: ours and the reference's
# --------------------------------------------------------------------------
_REF_STAGE = re.compile(r'^network\.(\d+)\.(.*)$')
_REF_DENSE_NORM = re.compile(r'^norm(\d+)\.(.*)$')
CONVERTER = 'tools/model_converters/fcvit_to_mm.py'


def extract_state_dict(checkpoint, filename: str = '<checkpoint>') -> Dict:
    """The weights of a loaded checkpoint: under ``state_dict`` or ``model``
    or at the top level, with any ``module.`` (DataParallel) prefix removed.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f'{filename!r} is not a checkpoint: expected a dict of tensors, '
            f'got {type(checkpoint).__name__}')
    sd = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), Mapping):
            sd = checkpoint[key]
            break
    tensors = OrderedDict((k, v) for k, v in sd.items()
                          if isinstance(v, torch.Tensor))
    if not tensors:
        raise CheckpointError(
            f'{filename!r} holds no weights (no tensors at the top level nor '
            f'under "state_dict" or "model")')
    return OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v)
        for k, v in tensors.items())


def is_reference_layout(state_dict: Mapping) -> bool:
    """Whether keys follow the reference implementation (``network.*``)."""
    return any(k.startswith('network.') for k in state_dict)


def convert_reference_state_dict(
        state_dict: Mapping) -> Tuple['OrderedDict', 'OrderedDict']:
    """Rename a reference FCViT state dict to this project's layout.

    ``patch_embed`` stays; ``network.{2i}.{j}`` (stage ``i``, block ``j``)
    becomes ``stages.{i}.blocks.{j}``; ``network.{2i-1}`` (the downsampling
    into stage ``i``) becomes ``stages.{i}.downsample``; the dense output
    norms ``norm{2i}`` become ``norm{i}``; the classification model's final
    ``norm`` becomes ``norm3``.

    Returns:
        (backbone, head): the backbone's weights, and the classification
        head's (``head.weight``/``head.bias`` as ``weight``/``bias``).
    """
    backbone, head = OrderedDict(), OrderedDict()
    for key, value in state_dict.items():
        m = _REF_STAGE.match(key)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            if idx % 2 == 0:
                block, _, tail = rest.partition('.')
                new = f'stages.{idx // 2}.blocks.{block}.{tail}'
            else:
                new = f'stages.{(idx + 1) // 2}.downsample.{rest}'
            backbone[new] = value
            continue
        m = _REF_DENSE_NORM.match(key)
        if m and int(m.group(1)) % 2 == 0:
            backbone[f'norm{int(m.group(1)) // 2}.{m.group(2)}'] = value
        elif key.startswith('norm.'):
            backbone['norm3.' + key[len('norm.'):]] = value
        elif key.startswith('head.'):
            head[key[len('head.'):]] = value
        else:
            backbone[key] = value
    return backbone, head


def backbone_state_dict_from(state_dict: Mapping,
                             prefix: Optional[str] = None) -> Dict:
    """Pick the backbone's weights out of any supported state dict: this
    project's layout (bare, or under ``prefix``, e.g. an mmdet / mmseg /
    mmpretrain model's ``backbone.``), or the reference's classification and
    dense layouts (optionally under ``backbone.``, as its mmdet 2.x / mmseg
    0.x training wrote them; renamed when the backbone loads them)."""
    for p in filter(None, (prefix, 'backbone.')):
        if any(k.startswith(p) for k in state_dict):
            return OrderedDict((k[len(p):], v) for k, v in state_dict.items()
                               if k.startswith(p))
    return state_dict


# --------------------------------------------------------------------------
# the loading rule (a load_state_dict pre-hook of FCViT)
# --------------------------------------------------------------------------
def _shape_mismatches(own: Mapping, given: Mapping) -> List[tuple]:
    return [(k, tuple(v.shape), tuple(own[k].shape))
            for k, v in given.items()
            if k in own and hasattr(v, 'shape') and v.shape != own[k].shape]


def check_fits(module: nn.Module, state_dict: Mapping,
               where: str = '') -> None:
    """Raise :class:`CheckpointError` if ``state_dict`` (keys relative to
    ``module``) has tensors of other shapes than the module's, or holds
    fewer than half of the module's weights."""
    own = module.state_dict(keep_vars=True)
    name = type(module).__name__ + (f' (at {where!r})' if where else '')
    bad = _shape_mismatches(own, state_dict)
    if bad:
        lines = '\n'.join(f'  {k}: checkpoint {a} vs model {b}'
                          for k, a, b in bad[:20])
        more = f'\n  ... and {len(bad) - 20} more' if len(bad) > 20 else ''
        raise CheckpointError(
            f'checkpoint does not fit this {name} ({len(bad)} shape '
            f'mismatches; another variant?):\n{lines}{more}')
    present = sum(k in state_dict for k in own)
    if present * 2 < len(own):
        raise CheckpointError(
            f'checkpoint holds {present} of the {len(own)} weights of this '
            f'{name}: loading it would leave the backbone mostly random. A '
            f'checkpoint of the reference implementation (keys "network.*", '
            f'"head.*" at the top level) must be converted first: python '
            f'{CONVERTER} SRC DST; otherwise check that the checkpoint is '
            f'one of this model (or give its key prefix in init_cfg).')


def fit_checkpoint(module: nn.Module, state_dict: dict, prefix: str,
                   *args) -> None:
    """``load_state_dict`` pre-hook of FCViT: rename the reference's keys
    (under ``prefix``) to ours in place, then :func:`check_fits`."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    local = OrderedDict((k[len(prefix):], state_dict[k]) for k in keys)
    if is_reference_layout(local):
        local = _ours(local)
        for k in keys:
            del state_dict[k]
        state_dict.update((prefix + k, v) for k, v in local.items())
    check_fits(module, local, prefix[:-1])


def _ours(state_dict: Mapping) -> Mapping:
    """A backbone state dict in this project's layout (the reference's
    renamed; its classification head is not the backbone's)."""
    if is_reference_layout(state_dict):
        return convert_reference_state_dict(state_dict)[0]
    return state_dict


def load_pretrained(module: nn.Module,
                    filename: str,
                    prefix: Optional[str] = None,
                    map_location='cpu',
                    logger=None):
    """Load an FCViT backbone checkpoint of any supported layout (the
    ``init_cfg=dict(type='Pretrained', ...)`` door). Missing and unexpected
    keys are logged; what does not fit raises, naming the file."""
    ckpt = safe_load(filename, map_location=map_location)
    sd = backbone_state_dict_from(extract_state_dict(ckpt, filename), prefix)
    try:
        missing, unexpected = module.load_state_dict(sd, strict=False)
    except CheckpointError as e:
        raise CheckpointError(f'{filename!r}: {e}') from None
    if logger is not None:
        logger.info(f'loaded {len(sd) - len(unexpected)} tensors from '
                    f'{filename}')
        if missing:
            logger.warning(f'missing keys in {filename}: '
                           f'{", ".join(missing)}')
        if unexpected:
            logger.warning(f'unexpected keys in {filename}: '
                           f'{", ".join(unexpected)}')
    return missing, unexpected


def is_empty_pretrained(init_cfg) -> bool:
    """The one rule for ``checkpoint=None``: a ``Pretrained`` init config
    without a checkpoint means "initialise from scratch" (with a warning
    from the module, see ``FCViT.init_weights``)."""
    return (isinstance(init_cfg, Mapping)
            and init_cfg.get('type') == 'Pretrained'
            and not init_cfg.get('checkpoint'))


# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------
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


# --------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------
_NUMBER = re.compile(r'(\d+)')


def _checkpoint_order(path: str) -> Tuple[float, float]:
    """Newest first: by the number in the name (epoch_N / iter_N), then by
    modification time."""
    numbers = _NUMBER.findall(osp.basename(path))
    mtime = osp.getmtime(path) if osp.exists(path) else 0.
    return (float(numbers[-1]) if numbers else -1.0, mtime)


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


def check_resumable(path: str, model: Optional[nn.Module] = None) -> dict:
    """Load ``path`` as a training checkpoint of ``model``; its ``meta``.

    Raises:
        CheckpointError / FileNotFoundError: naming the file and why.
    """
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or 'state_dict' not in ckpt:
        raise CheckpointError(f'{path!r} holds no "state_dict"')
    if model is not None:
        sd = extract_state_dict(ckpt, path)
        for name, module in model.named_modules():
            if fit_checkpoint in _pre_hooks(module):
                local = _ours(backbone_state_dict_from(
                    sd, f'{name}.' if name else None))
                try:
                    check_fits(module, local, name)
                except CheckpointError as e:
                    raise CheckpointError(f'{path!r}: {e}') from None
    return dict(ckpt.get('meta') or {})


def _pre_hooks(module: nn.Module) -> list:
    hooks = getattr(module, '_load_state_dict_pre_hooks', {}).values()
    return [getattr(h, 'hook', h) for h in hooks]


def find_resumable_checkpoint(
        work_dir: str,
        logger=None,
        model: Optional[nn.Module] = None) -> Tuple[Optional[str], dict]:
    """The newest checkpoint of ``work_dir`` that loads (and fits
    ``model``), with a warning naming each newer one skipped.

    Returns:
        (path, meta): ``(None, {})`` if the work dir holds no checkpoint.

    Raises:
        CheckpointError: the work dir holds checkpoints but none loads; the
            message names each file and why.
    """
    failures = []
    for path in checkpoint_candidates(work_dir):
        try:
            return path, check_resumable(path, model)
        except (CheckpointError, FileNotFoundError) as e:
            failures.append(f'  {path}: {e}')
            if logger is not None:
                logger.warning(f'cannot resume from {path}: {e}; trying the '
                               f'next older checkpoint')
    if failures:
        raise CheckpointError(
            f'--resume: none of the checkpoints in {work_dir} can be resumed '
            f'from:\n' + '\n'.join(failures) + '\nMove them away to start '
            f'from scratch, or use another --work-dir.')
    return None, {}
