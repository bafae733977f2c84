# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Models for the analysis tools: by name, or from a config."""
import os.path as osp
from typing import FrozenSet, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

#: backbones the benchmark compares with: mmpretrain's, and torchvision's
#: ResNet-50 (``resnet50-tv``: needs no mmpretrain, e.g. on a GPU machine
#: that only has torch and torchvision)
PEERS = ('resnet50', 'convnext-t', 'poolformer-s12', 'resnet50-tv')
#: suffixes of ``fcvit-ARCH``: plain path (``fast_path=False``), fast path
#: forced (``fast_path=True``; without either, the constructor's default),
#: activation checkpointing, channels-last by hand
FCVIT_FLAGS = ('plain', 'cp', 'cl', 'fast')
NAME_FORMAT = 'fcvit-ARCH[-plain][-cp][-cl][-fast]'


def parse_fcvit_name(name: str,
                     flags: Tuple[str, ...] = FCVIT_FLAGS
                     ) -> Tuple[str, FrozenSet[str]]:
    """``'fcvit-b12-plain-cl'`` -> ``('b12', {'plain', 'cl'})``.

    ``flags`` are the suffixes the caller accepts; an unknown arch or suffix
    raises a ``ValueError`` naming the valid ones.
    """
    from fcvit_mm.models import FCViT
    archs = tuple(FCViT.arch_settings)
    parts = name.split('-')
    if len(parts) < 2 or parts[0] != 'fcvit':
        raise ValueError(f'{name!r} is not an FCViT model name')
    arch, given = parts[1], frozenset(parts[2:])
    usage = 'fcvit-ARCH' + ''.join(f'[-{f}]' for f in flags)
    if arch not in archs:
        problem = f'unknown FCViT arch {arch!r}'
    elif given - set(flags):
        problem = f'unknown suffix {sorted(given - set(flags))}'
    elif {'plain', 'fast'} <= given:
        problem = "suffixes '-plain' and '-fast' exclude each other"
    else:
        return arch, given
    raise ValueError(f'{problem} in {name!r}: use {usage} with ARCH in '
                     f'{archs}')


def build_backbone(name: str) -> nn.Module:
    """A backbone by name: ``fcvit-ARCH[-plain][-cp][-cl][-fast]`` (the
    default constructor, ``fast_path`` set only by ``-plain`` / ``-fast``;
    ``-cl`` is the caller's business) or one of :data:`PEERS`
    (mmpretrain's as shipped, or torchvision's ResNet-50 without its
    classifier)."""
    if name.startswith('fcvit-'):
        from fcvit_mm.models import FCViT
        arch, flags = parse_fcvit_name(name)
        kwargs = dict(arch=arch, with_cp='cp' in flags)
        if flags & {'plain', 'fast'}:
            kwargs['fast_path'] = 'fast' in flags
        return FCViT(**kwargs)
    if name == 'resnet50-tv':
        import torchvision
        model = torchvision.models.resnet50()
        model.fc = nn.Identity()  # pooled features; the Classifier's head
        return model
    if name in PEERS:
        from mmpretrain.models import ConvNeXt, PoolFormer, ResNet
        if name == 'resnet50':
            return ResNet(depth=50)
        if name == 'convnext-t':
            return ConvNeXt(arch='tiny')
        return PoolFormer(arch='s12')
    raise ValueError(f'unknown model {name!r}; valid: {NAME_FORMAT} or one '
                     f'of {PEERS}')


class Classifier(nn.Module):
    """Backbone + global average pool (of its last output) + linear head,
    or the backbone alone (``backbone_only``; :meth:`loss` is then the sum
    of the means of its outputs)."""

    def __init__(self, backbone: nn.Module, num_classes: int = 1000,
                 backbone_only: bool = False):
        super().__init__()
        self.backbone = backbone
        self.backbone_only = backbone_only
        self.head = None
        if not backbone_only:
            with torch.no_grad():
                was = backbone.training
                backbone.eval()
                feat = self._pool(backbone(torch.zeros(1, 3, 64, 64)))
                backbone.train(was)
            self.head = nn.Linear(feat.shape[1], num_classes)

    @staticmethod
    def _pool(outs):
        feat = outs[-1] if isinstance(outs, (tuple, list)) else outs
        return feat.mean((2, 3)) if feat.dim() == 4 else feat

    def forward(self, x):
        outs = self.backbone(x)
        if self.backbone_only:
            return outs
        return self.head(self._pool(outs))

    def loss(self, x, target):
        out = self(x)
        if self.backbone_only:
            outs = out if isinstance(out, (tuple, list)) else (out, )
            return sum(o.float().mean() for o in outs)
        return F.cross_entropy(out.float(), target)


def fcvit_classifier(arch: str, num_classes: int = 1000) -> Classifier:
    """The reference's ImageNet classifier: FCViT whose stage-3 output norm
    is the final norm, pooling, linear head."""
    from fcvit_mm.models import FCViT
    return Classifier(FCViT(arch=arch, out_indices=(3, )), num_classes)


def use_plain_path(model: nn.Module) -> nn.Module:
    """Put every FCViT module of ``model`` on its plain path."""
    from fcvit_mm.models.backbones.fcvit import FastPathMixin
    for m in model.modules():
        if isinstance(m, FastPathMixin):
            m.fast_path = False
    return model


def find_fcvit(model: nn.Module):
    """The FCViT backbone in ``model`` (``model`` itself if it is one)."""
    from fcvit_mm.models import FCViT
    for m in model.modules():
        if isinstance(m, FCViT):
            return m
    raise ValueError(f'the model ({type(model).__name__}) has no FCViT '
                     'backbone')


def resolve_config_path(path: str) -> str:
    """``pkg::rel/path.py`` -> the file shipped in ``pkg``'s ``.mim``."""
    if '::' in path:
        import importlib.util
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


def load_task_config(config, cfg_options: Optional[dict] = None):
    """(cfg, scope) of a config (a file, ``pkg::path`` for a library's own,
    or a ``Config``, copied), with ``cfg_options`` as ``--cfg-options``
    (``{'a.b': value}``) merged in, its library's default scope set and
    the library's models and FCViT registered."""
    import copy
    import importlib

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        cfg = Config.fromfile(resolve_config_path(str(config)))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg', 'mmpretrain'):
        raise ValueError(f'config {cfg.filename!r}: default_scope {scope!r} '
                         'is not mmdet, mmseg or mmpretrain')
    init_default_scope(scope)
    importlib.import_module(f'{scope}.models')  # registers the library's
    import fcvit_mm  # noqa: F401  (registers FCViT)
    return cfg, scope


def build_model_from_config(path: str, cfg_options: Optional[dict] = None):
    """(model, cfg, scope) for a config, as the libraries' runners build it
    (top-level ``data_preprocessor`` merged in), without pretrained
    weights; ``cfg_options`` as ``--cfg-options`` (``{'a.b': value}``)."""
    from mmengine.registry import MODELS
    cfg, scope = load_task_config(path, cfg_options)
    model_cfg = cfg.model
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None  # no pretrained weights
    return MODELS.build(model_cfg), cfg, scope


def model_from_name_or_config(spec: str):
    """(model, FCViT backbone) for ``fcvit-ARCH`` (a bare backbone) or a
    config file."""
    if spec.startswith('fcvit-'):
        from fcvit_mm.models import FCViT
        arch, _ = parse_fcvit_name(spec, flags=())
        model = FCViT(arch=arch)
        return model, model
    model, _, _ = build_model_from_config(spec)
    return model, find_fcvit(model)
