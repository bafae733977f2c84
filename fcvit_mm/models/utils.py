# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Reading FCViT checkpoints: the reference layout and this project's."""
import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from fcvit_mm.utils.checkpoint import CheckpointError, safe_load

_REF_STAGE = re.compile(r'^network\.(\d+)\.(.*)$')
_REF_DENSE_NORM = re.compile(r'^norm(\d+)\.(.*)$')


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
    """Pick the backbone's weights out of any supported state dict.

    Handles: this project's layout (bare, or under ``prefix``, e.g. an
    mmdet/mmseg/mmpretrain model's ``backbone.``), and the reference's
    classification and dense layouts (optionally under ``backbone.``, as its
    mmdet 2.x / mmseg 0.x training wrote them).
    """
    for p in filter(None, (prefix, 'backbone.')):
        if any(k.startswith(p) for k in state_dict):
            state_dict = OrderedDict((k[len(p):], v)
                                     for k, v in state_dict.items()
                                     if k.startswith(p))
            break
    if is_reference_layout(state_dict):
        state_dict, _ = convert_reference_state_dict(state_dict)
    return state_dict


def load_state_dict_checked(module: nn.Module, state_dict: Mapping,
                            source: str, logger=None):
    """Load non-strictly, but fail on shape mismatches and log key lists.

    Raises:
        CheckpointError: a key's shape differs; the message names the key,
            the checkpoint's shape and the model's.
    """
    own = module.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape))
                  for k, v in state_dict.items()
                  if k in own and v.shape != own[k].shape]
    if mismatched:
        lines = '\n'.join(f'  {k}: checkpoint {a} vs model {b}'
                          for k, a, b in mismatched[:20])
        more = '' if len(mismatched) <= 20 else \
            f'\n  ... and {len(mismatched) - 20} more'
        raise CheckpointError(
            f'checkpoint {source!r} does not fit this '
            f'{type(module).__name__} ({len(mismatched)} shape mismatches; '
            f'another variant?):\n{lines}{more}')
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    module.load_state_dict(state_dict, strict=False)
    if logger is not None:
        logger.info(f'loaded {len(state_dict) - len(unexpected)} tensors '
                    f'from {source}')
        if missing:
            logger.warning(f'missing keys in {source}: {", ".join(missing)}')
        if unexpected:
            logger.warning(
                f'unexpected keys in {source}: {", ".join(unexpected)}')
    return missing, unexpected


def load_pretrained(module: nn.Module,
                    filename: str,
                    prefix: Optional[str] = None,
                    map_location='cpu',
                    logger=None):
    """Load an FCViT backbone checkpoint of any supported layout."""
    ckpt = safe_load(filename, map_location=map_location)
    sd = backbone_state_dict_from(extract_state_dict(ckpt, filename), prefix)
    return load_state_dict_checked(module, sd, filename, logger)
