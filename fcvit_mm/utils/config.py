# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Configs and the models they build, one way for every caller: the run
tools (``tools/train.py``, ``tools/test.py``, via
:mod:`fcvit_mm.engine.preflight`), the deploy package and the analysis
tools.

* :func:`resolve_config_path`: a file, or ``pkg::rel/path.py`` for a config
  shipped in an installed package's ``.mim/configs``;
* :func:`load_config`: the config, ``--cfg-options`` checked
  (:func:`check_cfg_options`) and merged in, a clear error for a missing
  file and a warning per top-level key that looks misspelt
  (:func:`misspelt_keys`);
* :func:`library_of`: the library a config belongs to (its
  ``default_scope``); :func:`model_task`: the task of a library model (by
  its class);
* :func:`load_task_config`: :func:`load_config` + :func:`library_of`, with
  the library's default scope set and its models and FCViT registered;
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
from typing import List, Optional, Tuple, Union

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


class ConfigKeyError(KeyError):
    """A ``--cfg-options`` key that the config does not have and nothing
    takes, or a list index it does not have."""

    def __str__(self):
        return str(self.args[0])


def _registered_class(type_, scope: Optional[str]):
    """The class a ``type`` names, from mmengine's registries (with the
    config's scope), or None."""
    if inspect.isclass(type_):
        return type_
    if not isinstance(type_, str):
        return None
    from mmengine import registry
    from mmengine.registry import DefaultScope
    roots = [getattr(registry, name) for name in dir(registry)
             if isinstance(getattr(registry, name), registry.Registry)]
    context = DefaultScope.overwrite_default_scope(scope) if scope else None
    try:
        if context is not None:
            context.__enter__()
        for root in roots:
            try:
                found = root.get(type_)
            except Exception:  # a registry that cannot import its modules
                found = None
            if inspect.isclass(found):
                return found
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    return None


def _takes(cls, key: str) -> bool:
    params = inspect.signature(cls.__init__).parameters.values()
    return any(p.kind is p.VAR_KEYWORD or p.name == key for p in params)


def _did_you_mean(key, keys) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in keys], n=1,
                                      cutoff=0.6)
    return f'; did you mean {close[0]!r}?' if close else ''


def _unknown_key(node: dict, key: str, path: List[str], type_,
                 scope: Optional[str]) -> Optional[str]:
    """Why ``key``, which ``node`` (at ``path``) does not have, cannot be
    added there, or None when it can: the class that ``node`` configures
    (``type_``, as the options leave it) takes no such argument, or (no
    class to ask) the key is a near miss of one ``node`` has."""
    where = '.'.join(path) or 'the config'
    cls = _registered_class(type_, scope) if path else None
    if cls is not None:
        if _takes(cls, key):
            return None
        return (f'{where} (type={cls.__name__}) takes no {key!r}'
                f'{_did_you_mean(key, node)}')
    known = list(node) if path else list(node) + known_config_keys()
    if key in known:
        return None
    close = difflib.get_close_matches(key, [str(k) for k in known], n=1,
                                      cutoff=0.8)
    if close:
        return f'{where} has no key {key!r}; did you mean {close[0]!r}?'
    return None


def _first_new_key(cfg: Config, option: str
                   ) -> Optional[Tuple[List[Union[str, int]], str]]:
    """``(path, key)``: the first part of ``option`` (``'a.0.b'``) that
    the config lacks in a dict, with the path to that dict (list indices
    as ints); None when the config has the whole key, or when the walk
    reaches something that is neither a dict nor a list. A
    :class:`ConfigKeyError` for a list index the config does not have
    (mmengine's merge would fail on it with a bare ``KeyError``)."""
    node, path = dict(cfg.items()), []
    for part in option.split('.'):
        if isinstance(node, (list, tuple)) and part.isdigit():
            if int(part) >= len(node):
                where = '.'.join(str(p) for p in path)
                raise ConfigKeyError(
                    f'--cfg-options {option}: {where} has {len(node)} '
                    f'items, no item {part}')
            node = node[int(part)]
            path.append(int(part))
        elif isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        else:
            return (path, part) if isinstance(node, dict) else None
    return None


def _node_at(cfg: Config, path: List[Union[str, int]]) -> dict:
    node = dict(cfg.items())
    for part in path:
        node = node[part]
    return node


def check_cfg_options(cfg: Config, options: Optional[dict]) -> None:
    """Raise :class:`ConfigKeyError` for a ``--cfg-options`` key that the
    config does not have where it cannot be new either: the class its
    parent configures (``type``, as the options leave it) takes no such
    argument, or, with no class to ask, it is a near miss of a key the
    parent has (``datset`` for ``dataset``). A list index must exist."""
    new = {}
    for option in options or {}:  # every list index before merging
        found = _first_new_key(cfg, option)
        if found is not None:
            new[option] = found
    if not new:
        return
    scope = cfg.get('default_scope')
    merged = copy.deepcopy(cfg)  # the types as the options leave them
    merged.merge_from_dict(options)
    for option, (path, key) in new.items():
        node = _node_at(cfg, path)
        why = _unknown_key(node, key, [str(p) for p in path],
                           _node_at(merged, path).get('type'), scope)
        if why is not None:
            raise ConfigKeyError(f'--cfg-options {option}: {why}')


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
    (``{'a.b': value}``) checked (:func:`check_cfg_options`: a key that
    nothing takes stops here, named) and merged in, and a warning for each
    top-level key that looks misspelt."""
    if isinstance(config, Config):
        cfg, name = copy.deepcopy(config), config.filename
    else:
        cfg = Config.fromfile(resolve_config_path(str(config)))
        name = config
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    for key, close in misspelt_keys(cfg):
        print_log(
            f'config {name}: unknown top-level key {key!r} (ignored); did '
            f'you mean {close!r}?', logger='current', level=logging.WARNING)
    return cfg


def library_of(cfg: Config) -> str:
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
    """``(cfg, scope)``: :func:`load_config` and :func:`library_of`, with
    the library's default scope set and the library's models and FCViT
    registered (what building the config's model needs)."""
    from mmengine.registry import init_default_scope
    cfg = load_config(config, cfg_options)
    scope = library_of(cfg)
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
