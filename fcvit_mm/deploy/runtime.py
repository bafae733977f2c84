# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Run an export of :func:`fcvit_mm.deploy.export_model` in a runtime of
:data:`fcvit_mm.deploy.backends.RUNTIMES` (ONNX Runtime, OpenVINO).

:func:`init_onnx_model` returns the library's own model, built from the
exported config without weights, whose network parts are answered by
sessions of the runtime chosen (:mod:`fcvit_mm.deploy.backends`), in the
precision chosen.
Everything else (test pipeline, data preprocessor, post-processing) is the
library's code, so its inference functions take the model as they take a
PyTorch one::

    model = init_onnx_model('work_dirs/maskrcnn_onnx')
    # or runtime='openvino', and precision='bf16' on a CPU with bf16
    result = mmdet.apis.inference_detector(model, 'demo.jpg')
"""
import json
import os.path as osp
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn

from ..utils.config import load_task_config
from .backends import check_options, open_session, session_precision
from .export import FORMAT_VERSION, MANIFEST
from .parts import resolve
from .structure import flatten, unflatten


class OnnxPart:
    """A callable that stands in for a method of the library model: it
    flattens its first argument, checks it against what the graph takes,
    runs the graph in its session (any runtime of
    :mod:`fcvit_mm.deploy.backends`) and rebuilds the method's output
    structure."""

    def __init__(self, session, entry: dict, min_size: Optional[int] = None):
        self.session = session
        self.entry = entry
        self.name = entry['name']
        self.min_size = min_size
        self.inputs = session.inputs

    def check(self, tensors: List[torch.Tensor]) -> None:
        """Raise a ValueError naming the problem if the graph cannot take
        ``tensors``."""
        if len(tensors) != len(self.inputs):
            raise ValueError(f'the exported {self.name} takes '
                             f'{len(self.inputs)} tensors, got {len(tensors)}')
        for t, spec in zip(tensors, self.inputs):
            shape = tuple(t.shape)
            if len(shape) != len(spec.shape):
                raise ValueError(
                    f'the exported {self.name} takes {spec.name!r} with '
                    f'{len(spec.shape)} dims {spec.shape}, got shape {shape}')
            fixed = [(d, s) for d, s in zip(shape, spec.shape)
                     if isinstance(s, int) and d != s]
            if fixed:
                raise ValueError(
                    f'the exported {self.name} takes {spec.name!r} of shape '
                    f'{spec.shape} (exported with a static shape; export '
                    f'with dynamic shapes to feed other sizes), got {shape}')
        if self.entry.get('image_input') and self.min_size:
            h, w = tensors[0].shape[2:]
            if h < self.min_size or w < self.min_size:
                raise ValueError(
                    f'the exported {self.name} needs images of at least '
                    f'{self.min_size} x {self.min_size} pixels (the '
                    f'backbone\'s total stride), got {h} x {w}')

    def __call__(self, x, *args, **kwargs):
        tensors, _ = flatten(x)
        self.check(tensors)
        feed = {spec.name: t.detach().cpu().float().contiguous().numpy()
                for spec, t in zip(self.inputs, tensors)}
        outs = self.session.run(feed)
        return unflatten([torch.from_numpy(np.ascontiguousarray(o))
                          for o in outs], self.entry['out_spec'])


def _identity(x, *args, **kwargs):
    return x


def read_manifest(export_dir: str) -> dict:
    """The manifest of an export folder, or an error naming what is
    wrong."""
    path = osp.join(export_dir, MANIFEST)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{export_dir!r} is not an export of '
                                f'tools/deployment/export_onnx.py: no '
                                f'{MANIFEST}')
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get('format') != FORMAT_VERSION:
        raise ValueError(f'{path}: format {manifest.get("format")!r}, this '
                         f'fcvit_mm reads format {FORMAT_VERSION}')
    return manifest


def _library_model(cfg, scope: str,
                   checkpoint: Optional[str] = None) -> nn.Module:
    """The library's model of ``cfg`` built by the library's own init
    function (mmdet ``init_detector``, mmseg ``init_model``, mmpretrain
    ``get_model``), on CPU, with the weights of ``checkpoint`` (None: none).
    """
    if scope == 'mmdet':
        from mmdet.apis import init_detector
        return init_detector(cfg, checkpoint, palette='none', device='cpu')
    if scope == 'mmseg':
        from mmseg.apis import init_model
        return init_model(cfg, checkpoint, device='cpu')
    from mmpretrain.apis import get_model
    return get_model(cfg, pretrained=checkpoint or False, device='cpu')


def init_library_model(config, checkpoint: Optional[str] = None
                       ) -> nn.Module:
    """The PyTorch model of ``config`` (a file, ``pkg::path`` or a Config)
    with the weights of ``checkpoint``, as the library's own init function
    loads it, on CPU."""
    cfg, scope = load_task_config(config)
    return _library_model(cfg, scope, checkpoint)


def init_onnx_model(export_dir: str, threads: Optional[int] = None,
                    providers: Optional[List[str]] = None,
                    runtime: str = 'onnxruntime',
                    precision: str = 'fp32') -> nn.Module:
    """The library model of an export, its network run by ``runtime``.

    Args:
        export_dir: folder written by :func:`fcvit_mm.deploy.export_model`.
        threads: the runtime's intra-op threads (default: its own choice).
        providers: ONNX Runtime execution providers (default: CPU); only
            with a runtime that takes them (``'onnxruntime'``).
        runtime: a name of :data:`~fcvit_mm.deploy.backends.RUNTIMES`:
            ``'onnxruntime'`` (the ``deploy`` extra) or ``'openvino'``
            (the ``openvino`` extra, on the CPU).
        precision: ``'fp32'`` (the default: float32, parity with PyTorch
            as docs/deployment.md states it) or ``'bf16'`` (OpenVINO only:
            faster on CPUs with bf16 units, parity criteria of its own; on
            a CPU without bf16 support it runs float32 and warns why).
            ``model.onnx_precision`` says which runs.
    """
    import warnings

    options = dict(providers=providers) if providers else {}
    check_options(runtime, options)
    precision = session_precision(runtime, precision)  # warns once
    manifest = read_manifest(export_dir)
    cfg, scope = load_task_config(osp.join(export_dir, manifest['config']))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # no checkpoint: meta comes below
        model = _library_model(cfg, scope)
    if manifest.get('dataset_meta'):
        meta = {k: tuple(v) if isinstance(v, list) else v
                for k, v in manifest['dataset_meta'].items()}
        if scope == 'mmpretrain':
            model._dataset_meta = meta
        else:
            model.dataset_meta = meta
    model.onnx_parts = {}
    for entry in manifest['parts']:
        session = open_session(osp.join(export_dir, entry['file']), runtime,
                               threads, precision, **options)
        part = OnnxPart(session, entry, manifest.get('min_size'))
        owner, attr = resolve(model, entry['replaces'])
        setattr(owner, attr, part)
        for path in entry['identity']:
            owner, attr = resolve(model, path)
            setattr(owner, attr, _identity)
        model.onnx_parts[entry['name']] = part
    model.onnx_manifest = manifest
    model.onnx_runtime = runtime
    model.onnx_precision = precision
    return model.eval()
