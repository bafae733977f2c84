# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Config + checkpoint -> a folder of ONNX graphs that ONNX Runtime runs.

:func:`export_model` builds the library's model from the config, loads the
checkpoint only if it fits the config exactly, exports each part of the
network (:mod:`fcvit_mm.deploy.parts`) with one of torch's ONNX exporters,
checks every graph in ONNX Runtime against PyTorch on the export input, and
writes next to the graphs the config (``config.py``) and a manifest
(``deploy.json``: task, parts, their inputs and outputs, opset, export size,
the checkpoint's dataset meta) that :func:`fcvit_mm.deploy.init_onnx_model`
reads.
"""
import json
import os
import os.path as osp
import warnings
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..utils.config import build_model, load_task_config, model_task
from .backends import OrtSession
from .parts import Part, build_parts, min_input_size
from .rewrites import make_exportable
from .structure import flatten, unflatten

MANIFEST = 'deploy.json'
CONFIG = 'config.py'
FORMAT_VERSION = 1
#: opsets each exporter is supported with here (tried on the tiny
#: classifier: TorchScript-based 11, 17 and 20, dynamo-based 18); the
#: dynamo-based exporter writes opset 18 at least.
OPSETS = {'torchscript': (11, 20), 'dynamo': (18, 23)}
DEFAULT_OPSET = 17
#: export sizes (height, width) when none is given
DEFAULT_SHAPES = {'classification': (224, 224), 'segmentation': (512, 512),
                  'detection': (800, 1344)}
#: largest |ORT - PyTorch| on the export input, relative to the output's
#: largest magnitude, that the export accepts
CHECK_RTOL = 1e-3


class CheckpointMismatchError(ValueError):
    """The checkpoint's weights do not fit the model the config builds."""


def check_opset(opset: int, exporter: str) -> None:
    """Raise a ValueError naming the supported range if ``opset`` is out of
    it (or the exporter is unknown)."""
    if exporter not in OPSETS:
        raise ValueError(f'unknown exporter {exporter!r}; choose from '
                         f'{sorted(OPSETS)}')
    low, high = OPSETS[exporter]
    if not isinstance(opset, int) or not low <= opset <= high:
        raise ValueError(f'ONNX opset {opset!r} is not supported with the '
                         f'{exporter} exporter: choose one from {low} to '
                         f'{high} (default {DEFAULT_OPSET})')


def load_weights(model: nn.Module, checkpoint: str,
                 config_name: str = 'the config') -> dict:
    """Load ``checkpoint`` into ``model`` if it fits exactly (every weight
    present, none extra, every shape equal), else raise a
    :class:`CheckpointMismatchError` that lists what does not fit. Returns
    the checkpoint's ``meta`` (empty if it has none).

    The file is read and its weights taken as every load of this project
    does (:func:`fcvit_mm.models.checkpoint.safe_load`,
    :func:`~fcvit_mm.models.checkpoint.extract_state_dict`), and FCViT
    applies its own fit rule as it loads; on top of that, an export takes
    the whole model exactly."""
    from fcvit_mm.models.checkpoint import (CheckpointError,
                                            extract_state_dict, safe_load)
    ckpt = safe_load(checkpoint)  # FileNotFoundError naming the file
    try:
        state = extract_state_dict(ckpt, checkpoint)
    except CheckpointError as e:
        raise CheckpointMismatchError(str(e)) from None
    what = f'checkpoint {checkpoint} does not fit the model of {config_name}'
    try:
        res = model.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError, KeyError) as e:  # shapes, FCViT's rule
        raise CheckpointMismatchError(f'{what}: {e}') from e
    problems = []
    if res.missing_keys:
        problems.append(f'{len(res.missing_keys)} weights missing from the '
                        f'checkpoint ({_some(res.missing_keys)})')
    if res.unexpected_keys:
        problems.append(f'{len(res.unexpected_keys)} weights the model does '
                        f'not have ({_some(res.unexpected_keys)})')
    if problems:
        raise CheckpointMismatchError(f'{what}: ' + '; '.join(problems))
    meta = ckpt.get('meta', {})
    return meta if isinstance(meta, dict) else {}


def _some(keys: Sequence[str], n: int = 5) -> str:
    keys = list(keys)
    return ', '.join(keys[:n]) + (', ...' if len(keys) > n else '')


class _FlatModule(nn.Module):
    """A part as a module of flat tensor inputs and outputs (what the
    exporters take); ``model`` (the module holding the part's weights) is
    registered so that its weights are the graph's initializers."""

    def __init__(self, model: nn.Module, part: Part, in_spec):
        super().__init__()
        self.model = model
        self._fn = part.fn
        self._in_spec = in_spec

    def forward(self, *tensors):
        out = self._fn(unflatten(list(tensors), self._in_spec))
        return tuple(flatten(out)[0])


def _json_meta(meta) -> Optional[dict]:
    """dataset_meta made JSON-safe (tuples -> lists), or None."""
    if not meta:
        return None
    try:
        return json.loads(json.dumps(meta, default=list))
    except (TypeError, ValueError):
        warnings.warn('the checkpoint\'s dataset_meta is not JSON-friendly; '
                      'it is left out of the export')
        return None


def export_part(module: _FlatModule, flat_inputs, path: str,
                input_names, output_names, dynamic_axes, opset: int,
                exporter: str) -> None:
    """Export one part with torch's TorchScript-based or dynamo-based ONNX
    exporter."""
    kwargs = dict(input_names=input_names, output_names=output_names,
                  opset_version=opset, dynamic_axes=dynamic_axes or None)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if exporter == 'torchscript':
            torch.onnx.export(module, tuple(flat_inputs), path, dynamo=False,
                              do_constant_folding=True, **kwargs)
        else:  # dynamic axes as torch.export's dynamic shapes of *inputs
            dims = None
            if dynamic_axes:
                dims = (tuple({a: torch.export.Dim.DYNAMIC
                               for a in dynamic_axes.get(n, {})}
                              for n in input_names), )
            kwargs.pop('dynamic_axes')
            program = torch.onnx.export(module, tuple(flat_inputs),
                                        dynamo=True, external_data=False,
                                        dynamic_shapes=dims, **kwargs)
            program.save(path)


#: the equivalent forms of FCViT that an export can hold (export_model)
BACKBONE_FORMS = ('deploy', 'plain', 'fast', 'config')


def set_backbone_form(model: nn.Module, form: str) -> None:
    """Put every FCViT module of ``model`` in ``form`` (see
    :func:`export_model`); weights must be loaded before (``'deploy'``
    folds them)."""
    from fcvit_mm.models import FCViT
    from fcvit_mm.models.backbones.fcvit import FastPathMixin
    if form == 'config':
        return
    for m in model.modules():
        if isinstance(m, FastPathMixin):
            m.kernels = 'standard' if form == 'fast' else 'onnx'
        if form == 'deploy' and isinstance(m, FCViT):
            m.switch_to_deploy()


def export_model(config, checkpoint: Optional[str], out_dir: str, *,
                 shape: Optional[Tuple[int, int]] = None, batch: int = 1,
                 opset: int = DEFAULT_OPSET, dynamic: bool = True,
                 exporter: str = 'torchscript',
                 cfg_options: Optional[dict] = None,
                 backbone_form: str = 'deploy',
                 seed: int = 0) -> dict:
    """Export the model of ``config`` with the weights of ``checkpoint``
    (``None``: the model's own initialisation, e.g. for timing) to
    ``out_dir``; returns the manifest also written to
    ``out_dir/deploy.json``.

    Args:
        shape: export (height, width); default per task
            (:data:`DEFAULT_SHAPES`).
        batch: export batch size.
        dynamic: batch, height and width (and the number of RoIs) free in
            the graphs; with False they are fixed to the export's.
        exporter: ``'torchscript'`` (``torch.onnx.export(dynamo=False)``)
            or ``'dynamo'``.
        backbone_form: which equivalent form of FCViT backbones goes into
            the graphs (:data:`BACKBONE_FORMS`): ``'deploy'`` (the default:
            its inference form, ``FCViT.switch_to_deploy()`` on the plain
            path: the smallest graph, one op per GroupNorm; its speed is
            within the scatter of the plain path's, docs/performance.md),
            ``'plain'`` (the training form's plain path), ``'fast'`` (its
            fast path) or ``'config'`` (as the config builds it). All
            compute the same function.
    """
    if backbone_form not in BACKBONE_FORMS:
        raise ValueError(f'unknown backbone_form {backbone_form!r}: choose '
                         f'one of {", ".join(BACKBONE_FORMS)}')
    check_opset(opset, exporter)
    if batch < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    config_name = config if isinstance(config, str) else 'the config'
    cfg, scope = load_task_config(config, cfg_options)
    torch.manual_seed(seed)
    model = build_model(cfg)
    task = model_task(model)
    meta = load_weights(model, checkpoint, config_name) if checkpoint else {}
    set_backbone_form(model, backbone_form)
    make_exportable(model)
    shape = tuple(shape or DEFAULT_SHAPES[task])
    min_size = min_input_size(model)
    if len(shape) != 2 or min(shape) < (min_size or 1):
        raise ValueError(f'export shape {shape} must be (height, width), '
                         f'each at least {min_size or 1}')
    image = torch.rand(batch, 3, *shape) * 2 - 1
    parts = build_parts(model, image)
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for part in parts:
        entries.append(_export_and_check(model, part, out_dir, opset,
                                         exporter, dynamic))
    cfg.dump(osp.join(out_dir, CONFIG))
    manifest = dict(
        format=FORMAT_VERSION, task=task, scope=scope,
        model_type=type(model).__name__, config=CONFIG,
        exporter=exporter, opset=opset, dynamic=dynamic,
        export_shape=[batch, 3, *shape], min_size=min_size,
        backbone_form=backbone_form,
        dataset_meta=_json_meta(meta.get('dataset_meta')),
        torch=torch.__version__, parts=entries)
    with open(osp.join(out_dir, MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=2)
    return manifest


def _export_and_check(model: nn.Module, part: Part, out_dir: str,
                      opset: int, exporter: str, dynamic: bool) -> dict:
    (arg, ) = part.example
    flat_in, in_spec = flatten(arg)
    with torch.no_grad():
        ref = part.fn(arg)
    flat_ref, out_spec = flatten(ref)
    input_names = ['image'] if part.image_input else [
        f'in{i}' for i in range(len(flat_in))]
    output_names = [f'out{i}' for i in range(len(flat_ref))]
    axes = {}
    if dynamic:
        axes = {n: a for n, a in zip(input_names, part.dynamic)}
        for name, t in zip(output_names, flat_ref):  # maps / per-item rows
            dims = (0, 2, 3) if t.dim() == 4 else (0, )
            axes[name] = {d: f'{name}_{d}' for d in dims}
    file = part.name + '.onnx'
    path = osp.join(out_dir, file)
    module = _FlatModule(part.module or model, part, in_spec).eval()
    with torch.no_grad():
        export_part(module, flat_in, path, input_names, output_names, axes,
                    opset, exporter)
    sess = OrtSession(path)
    got = sess.run({n: t.numpy() for n, t in zip(input_names, flat_in)})
    err = 0.0
    for g, r in zip(got, flat_ref):
        if tuple(g.shape) != tuple(r.shape):
            raise RuntimeError(f'{file}: ONNX Runtime output of shape '
                               f'{g.shape}, PyTorch {tuple(r.shape)}')
        scale = max(float(r.abs().max()), 1e-6) if r.numel() else 1.0
        if r.numel():
            err = max(err, float((torch.from_numpy(g) - r).abs().max()) /
                      scale)
    if err > CHECK_RTOL:
        raise RuntimeError(f'{file}: ONNX Runtime differs from PyTorch on '
                           f'the export input by {err:.2e} of the output '
                           f'scale (> {CHECK_RTOL})')
    return dict(name=part.name, file=file, replaces=part.replaces,
                identity=part.identity, image_input=part.image_input,
                inputs=input_names, outputs=output_names,
                in_spec=in_spec, out_spec=out_spec, check_rel_error=err)
