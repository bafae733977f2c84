# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Configs and the models they build, one way for every caller: the run
tools (``tools/train.py``, ``tools/test.py``, via
:mod:`fcvit_mm.engine.preflight`), the deploy package and the analysis
tools.

* :func:`resolve_config_path`: a file, or ``pkg::rel/path.py`` for a config
  shipped in an installed package's ``.mim/configs``;
* :func:`load_config`: the config, ``--cfg-options`` merged in, a clear
  error for a missing file and a warning per top-level key that looks
  misspelt (:func:`misspelt_keys`);
* :func:`task_of`: the library a config belongs to (its ``default_scope``);
  :func:`model_task`: the task of a library model (by its class);
* :func:`load_task_config`: :func:`load_config` + :func:`task_of`, with the
  library's default scope set and its models and FCViT registered;
* :func:`build_model`: the config's model as the libraries' inference
  functions build it (no pretrained weights, SyncBN reverted, eval mode).
"""
import copy
import difflib
import importlib
import importlib.util
import inspect
import logging
import os.path as osp
from typing import List, Optional, Tuple

from mmengine.config import Config
from mmengine.logging import print_log

#: default_scope -> the task of the library whose tools the config follows
TASK_LIBRARIES = {
    'mmdet': 'detection',
    'mmseg': 'segmentation',
    'mmpretrain': 'classification',
}
#: task -> the library model class (a base of the model's class) that
#: fcvit_mm handles for it
TASK_MODELS = {
    'classification': 'ImageClassifier',  # mmpretrain
    'segmentation': 'EncoderDecoder',  # mmseg
    'detection': 'BaseDetector',  # mmdet
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


def resolve_config_path(path: str) -> str:
    """``pkg::rel/path.py`` -> the file shipped in ``pkg``'s ``.mim``; a
    plain path as it is. A FileNotFoundError when there is no such file."""
    if '::' in path:
        pkg, rel = path.split('::', 1)
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f'config {path!r}: package {pkg!r} is not installed')
        path = osp.join(osp.dirname(spec.origin), '.mim', 'configs', rel)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path!r}')
    return path


def load_config(config, cfg_options: Optional[dict] = None) -> Config:
    """The config of a file, of ``pkg::path`` (a library's own) or a
    ``Config`` (copied), with ``cfg_options`` as ``--cfg-options``
    (``{'a.b': value}``) merged in, and a warning for each top-level key
    that looks misspelt."""
    if isinstance(config, Config):
        cfg, name = copy.deepcopy(config), config.filename
    else:
        cfg = Config.fromfile(resolve_config_path(str(config)))
        name = config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    for key, close in misspelt_keys(cfg):
        print_log(
            f'config {name}: unknown top-level key {key!r} (ignored); did '
            f'you mean {close!r}?', logger='current', level=logging.WARNING)
    return cfg


def task_of(cfg: Config) -> str:
    """The library a config belongs to (``'mmdet'``, ``'mmseg'`` or
    ``'mmpretrain'``), from its ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASK_LIBRARIES:
        raise ValueError(
            f'config {cfg.filename!r} has default_scope={scope!r}; fcvit_mm '
            f'tools handle {sorted(TASK_LIBRARIES)} (mmdet, mmseg, '
            'mmpretrain)')
    return scope


def model_task(model) -> str:
    """``'classification'``, ``'segmentation'`` or ``'detection'`` for a
    library model (by the library class among its bases), else a
    NotImplementedError naming what is supported."""
    bases = {c.__name__ for c in type(model).__mro__}
    for task, cls in TASK_MODELS.items():
        if cls in bases:
            return task
    raise NotImplementedError(
        f'cannot export a {type(model).__name__}: supported are mmpretrain '
        'ImageClassifier, mmseg EncoderDecoder and mmdet detectors '
        '(BaseDetector)')


def load_task_config(config, cfg_options: Optional[dict] = None
                     ) -> Tuple[Config, str]:
    """``(cfg, scope)``: :func:`load_config` and :func:`task_of`, with the
    library's default scope set and the library's models and FCViT
    registered (what building the config's model needs)."""
    from mmengine.registry import init_default_scope
    cfg = load_config(config, cfg_options)
    scope = task_of(cfg)
    init_default_scope(scope)
    importlib.import_module(f'{scope}.models')  # registers the library's
    # FCViT is registered: importing this module imported fcvit_mm
    return cfg, scope


def build_model(cfg: Config):
    """The config's model as the libraries' inference functions build it:
    the top-level ``data_preprocessor`` merged in, no pretrained weights
    (the backbone's ``init_cfg`` and ``pretrained`` dropped), SyncBN
    reverted to BN, ``model.cfg`` set, in eval mode, on the CPU. The
    library's models must be registered (:func:`load_task_config`)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    if isinstance(model_cfg.get('backbone'), dict) and \
            'init_cfg' in model_cfg.backbone:
        model_cfg.backbone.init_cfg = None
    if 'pretrained' in model_cfg:
        model_cfg.pretrained = None
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    model.cfg = cfg
    return model.eval()
