# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Loading weights into FCViT: the model's side of checkpoints.

* **Safe loading.** Every load in this project goes through torch's
  ``weights_only=True`` unpickler (:func:`safe_load`), which only rebuilds
  tensors, plain containers and the few types allowlisted here: what
  mmengine 0.10 writes into a training checkpoint (its ``HistoryBuffer`` in
  the message hub, numpy arrays, dtypes and scalars) and
  ``argparse.Namespace``, which the reference's timm training script stores
  under ``args``. No generic callable (``getattr``, ``eval``, ...) is
  allowlisted. :func:`register_safe_globals` adds them to torch's allowlist
  when :mod:`fcvit_mm` is imported, so the libraries' own loaders read
  mmengine's checkpoints on torch >= 2.6 (whose ``torch.load`` defaults to
  ``weights_only=True``; how ``HistoryBuffer`` pickles as plain data is in
  :mod:`fcvit_mm.internals`). On onedl-mmengine, whose own loader would
  retry with ``weights_only=False``, :func:`guard_checkpoint_loading` puts
  mmengine's loads on the same weights-only path.
* **Read once.** :func:`safe_url` turns a path into one that mmengine's
  loaders read with :func:`safe_load` (scheme ``fcvit-safe://``), handing
  over a checkpoint already read for a check instead of reading it again.
* **Reference layout.** :func:`convert_reference_state_dict` renames the
  reference implementation's keys to ours.
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

Saving checkpoints and choosing one to resume from are the run's business
(:mod:`fcvit_mm.engine.checkpoints`, :mod:`fcvit_mm.engine.resume`); this
module imports nothing of the run layer.
"""
import argparse
import io
import os
import pickle
import re
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from fcvit_mm.internals import private, stack


def _numpy_globals() -> List[Any]:
    import numpy as np
    # what numpy arrays and scalars pickle as
    items = [private('numpy.core.multiarray:_reconstruct'),
             private('numpy.core.multiarray:scalar'), np.ndarray, np.dtype]
    # the concrete dtype classes (numpy >= 1.25: np.dtypes.Float64DType, ...)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        items += [getattr(dtypes, n) for n in dir(dtypes)
                  if n.endswith('DType')
                  and isinstance(getattr(dtypes, n), type)]
    return items


def safe_globals() -> List[Any]:
    """The allowlist: plain data types only."""
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer, argparse.Namespace] + _numpy_globals()


def register_safe_globals() -> None:
    """Add :func:`safe_globals` to torch's weights-only allowlist (adding
    them again changes nothing)."""
    torch.serialization.add_safe_globals(safe_globals())


def guard_checkpoint_loading() -> None:
    """Where mmengine loads checkpoints through its own ``_safe_torch_load``
    (onedl-mmengine), load them with :func:`load_weights_only` instead: no
    fallback that runs code, torch's allowlist left as it is
    (:mod:`fcvit_mm.internals` says why)."""
    if stack() != 'onedl':
        return
    from mmengine.runner import checkpoint
    private('mmengine.runner.checkpoint:_safe_torch_load')  # named if gone
    checkpoint._safe_torch_load = _load_for_mmengine


def _load_for_mmengine(file, map_location=None, weights_only=None):
    """mmengine's ``_safe_torch_load(file, map_location, weights_only)``;
    ``weights_only`` is ignored: every load is weights-only."""
    return load_weights_only(file, map_location)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be (safely) loaded."""


def safe_load(filename: str, map_location: Any = 'cpu') -> Any:
    """``torch.load`` a local path or URL with ``weights_only=True``.

    Raises:
        FileNotFoundError: the path does not exist (the message names it).
        CheckpointError: the file is corrupt, not a torch checkpoint, or
            holds objects outside the allowlist (e.g. code to execute).
    """
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
    return load_weights_only(source, map_location, name=filename)


def load_weights_only(source: Any, map_location: Any = None,
                      name: Optional[str] = None) -> Any:
    """``torch.load(source, weights_only=True)`` (a path or a file object),
    failures as :class:`CheckpointError` naming ``name`` (the path, by
    default): never a second try that could run code."""
    if name is None:
        name = source if isinstance(source, str) else 'checkpoint'
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f'refusing to load checkpoint {name!r}: it holds an object '
            f'that is not plain data (weights-only load failed: '
            f'{str(e).splitlines()[0]}). Checkpoints are never allowed to run '
            f'code; if this file comes from a trusted source, re-save its '
            f'state dict with plain types.') from None
    except Exception as e:  # the unpickler fails in many ways on garbage
        raise CheckpointError(
            f'cannot read checkpoint {name!r}: the file is corrupt, '
            f'truncated or not a PyTorch checkpoint ({type(e).__name__}: '
            f'{str(e).splitlines()[0] if str(e) else ""})') from None


#: mmengine checkpoint-loader scheme that loads through :func:`safe_load`
SAFE_SCHEME = 'fcvit-safe://'
_loaded: Dict[str, Any] = {}


def safe_url(filename: str, loaded: Any = None) -> str:
    """``filename`` as a path that mmengine's ``load_checkpoint`` (and so
    ``load_from``, ``resume``) reads with :func:`safe_load`, errors naming
    the file. ``loaded``: the file's content, already read, which the next
    load of the path takes instead of reading it again."""
    filename = os.fspath(filename)
    if filename.startswith(SAFE_SCHEME):
        filename = filename[len(SAFE_SCHEME):]
    _loaded.clear()  # at most one checkpoint held
    if loaded is not None:
        _loaded[filename] = loaded
    return SAFE_SCHEME + filename


def load_from_safe(filename: str, map_location: Any = None) -> Any:
    """The loader of :data:`SAFE_SCHEME` (the name tells mmengine's log
    which backend loaded it)."""
    filename = filename[len(SAFE_SCHEME):]
    if filename in _loaded:
        return _loaded.pop(filename)
    return safe_load(filename, map_location=map_location or 'cpu')


def register_safe_scheme() -> None:
    """Register :data:`SAFE_SCHEME` with mmengine's ``CheckpointLoader``."""
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme(SAFE_SCHEME, load_from_safe, force=True)


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


def check_backbone_fits(module: nn.Module, state_dict: Mapping,
                        prefix: Optional[str] = None,
                        where: str = '') -> None:
    """The loading rule applied before loading: ``state_dict`` (a whole
    checkpoint's weights, :func:`extract_state_dict`) must hold weights that
    fit ``module`` (an FCViT; its keys under ``prefix``, see
    :func:`backbone_state_dict_from`), the reference's layout renamed
    first, as :func:`fit_checkpoint` does when they are loaded; else
    :class:`CheckpointError`."""
    check_fits(module, _ours(backbone_state_dict_from(state_dict, prefix)),
               where)


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
