# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""What ``tools/train.py`` and ``tools/test.py`` check before building a
runner, so that a run fails early, naming the file:

* ``tools/test.py CKPT`` is read once with the safe loader, so a corrupt
  file or one that would run code fails at once with its name;
* annotation files are checked to exist and parse.

Exact resume, the NaN stop, safe checkpoint saving and the ``--resume``
fallback past corrupt checkpoints are not added here: the configs declare
them (``custom_hooks`` and ``default_hooks.checkpoint`` in
``_base_/default_runtime.py``), so they hold whichever ``train.py`` runs.
"""
from typing import List

from mmengine.config import Config

from fcvit_mm.utils.checkpoint import safe_load
from .data_checks import check_annotation_files


def prepare_training(cfg: Config) -> None:
    """All pre-flight steps of a training run (see the module doc)."""
    loaders: List[str] = ['train_dataloader']
    if cfg.get('val_cfg') is not None:
        loaders.append('val_dataloader')
    check_annotation_files(cfg, loaders)


def prepare_testing(cfg: Config, checkpoint: str) -> None:
    safe_load(checkpoint)
    check_annotation_files(cfg, ['test_dataloader'])
