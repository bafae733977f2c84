# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Configs name their ImageNet checkpoint in one place
(``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``); ``None`` there
means "train from scratch". This turns such entries into a plain
from-scratch initialisation, with a warning that says so."""
import logging
from typing import List

import torch.nn as nn
from mmengine.logging import print_log


def _is_empty_pretrained(cfg) -> bool:
    return (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'
            and not cfg.get('checkpoint'))


def drop_empty_pretrained(model: nn.Module,
                          logger='current',
                          warn: bool = True) -> List[str]:
    """Replace ``Pretrained`` init configs without a checkpoint.

    For every sub-module whose ``init_cfg`` is (or contains) a
    ``dict(type='Pretrained', checkpoint=None)``, that entry is removed (so
    the module initialises itself from scratch) and a warning naming the
    module is logged, unless ``warn`` is False (the whole model is loaded
    from a checkpoint afterwards anyway).

    Returns:
        list[str]: the names of the modules concerned ('' for the model).
    """
    names = []
    for name, module in model.named_modules():
        init_cfg = getattr(module, 'init_cfg', None)
        if _is_empty_pretrained(init_cfg):
            module.init_cfg = None
        elif isinstance(init_cfg, list) and any(
                _is_empty_pretrained(c) for c in init_cfg):
            module.init_cfg = [
                c for c in init_cfg if not _is_empty_pretrained(c)] or None
        else:
            continue
        names.append(name)
        if not warn:
            continue
        print_log(
            f'no pretrained checkpoint is set for {name or "the model"} '
            f'({type(module).__name__}): its weights start from scratch. Set '
            f'one with --cfg-options '
            f'{"model." + name if name else "model"}.init_cfg.checkpoint=PATH',
            logger=logger,
            level=logging.WARNING)
    return names
