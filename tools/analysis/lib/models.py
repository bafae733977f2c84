# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Models for the analysis tools: by name, or from a config."""
from typing import FrozenSet, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

#: backbones the benchmark compares with: mmpretrain's, and torchvision's
#: ResNet-50 (``resnet50-tv``: needs no mmpretrain, e.g. on a GPU machine
#: that only has torch and torchvision)
PEERS = ('resnet50', 'convnext-t', 'poolformer-s12', 'resnet50-tv')
#: suffixes of ``fcvit-ARCH``: plain path (``fast_path=False``: kernels
#: ``'plain'``), fast path forced (``fast_path=True``: the device's kernels;
#: without either, the constructor's default), activation checkpointing,
#: channels-last by hand
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
    """Put every FCViT module of ``model`` on its plain path (kernels
    ``'plain'``)."""
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


def build_model_from_config(path: str, cfg_options: Optional[dict] = None):
    """(model, cfg, scope) for a config (a file or ``pkg::path``), as
    :mod:`fcvit_mm.utils.config` builds it (no pretrained weights, in eval
    mode); ``cfg_options`` as ``--cfg-options`` (``{'a.b': value}``)."""
    from fcvit_mm.utils.config import build_model, load_task_config
    cfg, scope = load_task_config(path, cfg_options)
    return build_model(cfg), cfg, scope


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
