# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""What ``tools/train.py`` and ``tools/test.py`` do before building a
runner, so that a run fails early, naming the file:

* the config is loaded with a clear error for a missing file and a warning
  for each top-level key that looks misspelt (:func:`load_config`), and
  its library is told by its ``default_scope`` (:func:`task_of`);
* the visualizer gets a name no earlier run of the process took
  (:func:`fresh_visualizer_name`);
* annotation files are checked to exist and parse (COCO files: skipped
  annotations counted per file and reason, see :mod:`.data_checks`).

The hooks of a run (exact resume, the NaN stop, data checks, no worker left
behind, safe saving and ``--resume``) are not added here: the configs
declare them (``configs/_base_/fcvit_runtime.py``), so they hold whichever
``train.py`` runs a config.
"""
import difflib
import inspect
import logging
import os
from typing import List, Optional, Tuple

from mmengine.config import Config
from mmengine.logging import print_log

from .data_checks import check_annotation_files

#: default_scope -> the library whose tools the config follows
TASK_LIBRARIES = {
    'mmdet': 'detection',
    'mmseg': 'segmentation',
    'mmpretrain': 'classification',
}


#: top-level keys read by the tools or the runner beyond ``Runner``'s
#: arguments
TOOL_KEYS = ('runner_type', 'model_wrapper_cfg', 'find_unused_parameters',
             'compile', 'strategy', 'custom_imports', 'tta_model',
             'tta_pipeline')
#: variables the libraries' configs define for their own use, which must
#: not be taken for misspelt keys (``test_pipeline`` is close to
#: ``tta_pipeline``)
CONFIG_VARIABLES = ('train_pipeline', 'test_pipeline', 'val_pipeline',
                    'dataset_type', 'data_root', 'backend_args', 'metainfo',
                    'classes', 'img_scale', 'img_scales', 'crop_size',
                    'norm_cfg', 'data_preprocessor', 'checkpoint',
                    'checkpoint_file', 'pretrained')


def known_config_keys() -> List[str]:
    """The top-level config keys the runner and our tools act on."""
    from mmengine.runner import Runner
    params = inspect.signature(Runner.__init__).parameters
    return sorted({p for p in params if p != 'self'} | set(TOOL_KEYS))


def misspelt_keys(cfg: Config) -> List[Tuple[str, str]]:
    """``(key, closest known key)`` for each top-level key of ``cfg`` that
    nothing reads but is close to a key that something does (e.g.
    ``optim_wraper`` -> ``optim_wrapper``): a misspelt key is silently
    ignored otherwise."""
    known = known_config_keys()
    found = []
    for key in cfg.keys():
        if key in known or key in CONFIG_VARIABLES or key.startswith('_'):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close:
            found.append((key, close[0]))
    return found


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """``Config.fromfile`` with a clear error for a path that is not there,
    and a warning for each top-level key that looks misspelt."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path!r}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    for key, close in misspelt_keys(cfg):
        print_log(
            f'config {path}: unknown top-level key {key!r} (ignored); did '
            f'you mean {close!r}?', logger='current', level=logging.WARNING)
    return cfg


def task_of(cfg: Config) -> str:
    """The library a config belongs to, from its ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASK_LIBRARIES:
        raise ValueError(
            f'config has default_scope={scope!r}; fcvit_mm tools handle '
            f'{sorted(TASK_LIBRARIES)} (mmdet, mmseg, mmpretrain)')
    return scope


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
