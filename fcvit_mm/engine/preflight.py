# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""What ``tools/train.py`` and ``tools/test.py`` do before building a
runner, so that a run fails early, naming the file:

* the config is loaded with a clear error for a missing file, its
  ``--cfg-options`` checked, a warning for each top-level key that looks
  misspelt, and its library is told by its ``default_scope``
  (:func:`fcvit_mm.utils.config.load_config`,
  :func:`~fcvit_mm.utils.config.library_of`; the tools call them);
* the visualizer gets a name no earlier run of the process took
  (:func:`fresh_visualizer_name`);
* annotation files are checked to exist and parse (COCO files: skipped
  annotations counted per file and reason, see :mod:`.data_checks`).

The hooks of a run (exact resume, the NaN stop, data checks, no worker left
behind, safe saving and ``--resume``) are not added here: the configs
declare them (``configs/_base_/fcvit_runtime.py``), so they hold whichever
``train.py`` runs a config.
"""
from typing import List

from mmengine.config import Config

from .data_checks import check_annotation_files

__all__ = ['fresh_visualizer_name', 'prepare_training', 'prepare_testing']


def _visualizer_exists(cls, name: str) -> bool:
    # every ManagerMixin class keeps its own instances: look at subclasses
    if cls.check_instance_created(name):
        return True
    return any(_visualizer_exists(c, name) for c in cls.__subclasses__())


def fresh_visualizer_name(cfg: Config) -> None:
    """Give the config's visualizer a name no visualizer in this process has.

    The libraries' runtimes name it (``name='visualizer'``), and mmengine
    returns an existing instance of that name instead of building a new one,
    so a second run in the same process (``tools/train.py``'s ``main`` called
    twice) would write its scalars into the first run's folder.
    """
    vis = cfg.get('visualizer')
    if not isinstance(vis, dict) or not vis.get('name'):
        return
    from mmengine.visualization import Visualizer
    base, name, i = vis['name'], vis['name'], 0
    while _visualizer_exists(Visualizer, name):
        i += 1
        name = f'{base}_{i}'
    vis['name'] = name


def prepare_training(cfg: Config) -> None:
    """Check the annotation files that training reads."""
    loaders: List[str] = ['train_dataloader']
    if cfg.get('val_cfg') is not None:
        loaders.append('val_dataloader')
    check_annotation_files(cfg, loaders)


def prepare_testing(cfg: Config) -> None:
    """Check the annotation files that testing reads."""
    check_annotation_files(cfg, ['test_dataloader'])
