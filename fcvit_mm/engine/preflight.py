# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""What ``tools/train.py`` and ``tools/test.py`` check before building a
runner, so that a run fails early, naming the file:

* ``tools/test.py CKPT`` is read once with the safe loader, so a corrupt
  file or one that would run code fails at once with its name;
* annotation files are checked to exist and parse (COCO files: skipped
  annotations counted per file and reason);
* :data:`~fcvit_mm.engine.data_hooks.DATA_HOOKS` (data checked as it is
  loaded, no DataLoader worker left behind) are added when a config that
  sets its own ``custom_hooks`` left them out (our configs declare them).

Exact resume, the NaN stop, safe checkpoint saving and the ``--resume``
fallback past corrupt checkpoints are not added here: the configs declare
them (``custom_hooks`` and ``default_hooks.checkpoint`` in
``_base_/default_runtime.py``), so they hold whichever ``train.py`` runs.
"""
from typing import List

from mmengine.config import Config

from fcvit_mm.utils.checkpoint import safe_load
from .data_checks import check_annotation_files
from .data_hooks import DATA_HOOKS


def add_hooks(cfg: Config, names) -> None:
    """Append the hooks ``names`` to ``cfg.custom_hooks`` unless present."""
    hooks = list(cfg.get('custom_hooks') or [])
    present = {h.get('type') for h in hooks if isinstance(h, dict)}
    hooks += [dict(type=name) for name in names if name not in present]
    cfg.custom_hooks = hooks


def prepare_training(cfg: Config) -> None:
    """All pre-flight steps of a training run (see the module doc)."""
    add_hooks(cfg, DATA_HOOKS)  # data checks, no workers left
    loaders: List[str] = ['train_dataloader']
    if cfg.get('val_cfg') is not None:
        loaders.append('val_dataloader')
    check_annotation_files(cfg, loaders)


def prepare_testing(cfg: Config, checkpoint: str) -> None:
    safe_load(checkpoint)
    add_hooks(cfg, DATA_HOOKS)  # data checks, no workers left
    check_annotation_files(cfg, ['test_dataloader'])
