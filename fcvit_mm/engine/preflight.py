# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""What ``tools/train.py`` and ``tools/test.py`` do before building a
runner, so that a run neither loses work nor fails late:

* every training run gets :class:`~fcvit_mm.engine.hooks.RandomStateHook`
  (exact resume) and :class:`~fcvit_mm.engine.hooks.FiniteLossHook`
  (stop at the first NaN loss);
* ``--resume`` without a path picks the newest checkpoint that loads
  (skipping corrupt ones, with a warning) and keeps the interrupted run's
  seed; ``--resume PATH`` and ``tools/test.py CKPT`` are read once with the
  safe loader, so a corrupt file or one that would run code fails at once
  with its name;
* annotation files are checked to exist and parse (COCO files: skipped
  annotations counted), and :data:`~fcvit_mm.engine.data_hooks.DATA_HOOKS`
  check the data as it is loaded and leave no DataLoader worker behind.
"""
from typing import List, Optional

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from .checkpoint_io import find_resumable_checkpoint
from .data_checks import check_annotation_files
from .data_hooks import DATA_HOOKS

TRAINING_HOOKS = ('RandomStateHook', 'FiniteLossHook')


def add_training_hooks(cfg: Config, names=TRAINING_HOOKS) -> None:
    hooks = list(cfg.get('custom_hooks') or [])
    present = {h.get('type') for h in hooks if isinstance(h, dict)}
    for name in names:
        if name not in present:
            hooks.append(ConfigDict(type=name))
    cfg.custom_hooks = hooks


def resolve_resume(cfg: Config) -> Optional[str]:
    """Turn ``cfg.resume`` into an explicit, loadable ``cfg.load_from``.

    Returns:
        The checkpoint training resumes from, or None (fresh start).
    """
    if not cfg.get('resume', False):
        return None
    if cfg.get('load_from'):
        from fcvit_mm.utils.checkpoint import safe_load
        safe_load(cfg.load_from)  # raises, naming the file, if unusable
        return cfg.load_from
    path, meta = find_resumable_checkpoint(cfg.work_dir, _Log())
    if path is None:
        print_log(f'--resume: no loadable checkpoint in {cfg.work_dir}; '
                  f'starting from scratch', logger='current')
        cfg.resume = False
        return None
    print_log(f'--resume: resuming from {path}', logger='current')
    cfg.load_from = path
    randomness = cfg.get('randomness') or ConfigDict()
    if randomness.get('seed') is None and meta.get('seed') is not None:
        randomness['seed'] = meta['seed']
        cfg.randomness = randomness
    return path


class _Log:

    @staticmethod
    def warning(msg):
        print_log(msg, logger='current', level=30)


def prepare_training(cfg: Config) -> Optional[str]:
    """All pre-flight steps of a training run (see the module doc)."""
    add_training_hooks(cfg)
    add_training_hooks(cfg, DATA_HOOKS)  # data checks, no workers left
    loaders: List[str] = ['train_dataloader']
    if cfg.get('val_cfg') is not None:
        loaders.append('val_dataloader')
    check_annotation_files(cfg, loaders)
    return resolve_resume(cfg)


def prepare_testing(cfg: Config, checkpoint: str) -> None:
    from fcvit_mm.utils.checkpoint import safe_load
    safe_load(checkpoint)
    add_training_hooks(cfg, DATA_HOOKS)  # data checks, no workers left
    check_annotation_files(cfg, ['test_dataloader'])
