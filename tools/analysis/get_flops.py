#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""FLOPs and parameters of a config's model, or of an FCViT classifier.

    python tools/analysis/get_flops.py CONFIG [--shape H [W]]
    python tools/analysis/get_flops.py fcvit-b12 [--shape 224]

``CONFIG`` is one of our configs (detection, segmentation, classification;
``pkg::path`` for a library's own) or ``fcvit-{tiny,b12,b24,b48}`` for the
ImageNet classifier (backbone, final norm, pooling, 1000-class head).

Counts come from mmengine's jit-trace analysis (``FlopAnalyzer``), whose
convention is fvcore's: one multiply-add is one "FLOP" (so the numbers are
MACs), convolutions and matrix products are counted, element-wise arithmetic
and activations are not, and norms count 4-5 per element. FCViT's global
context needs more than the default handles to be counted correctly:

* ``aten::mean`` (the mean token): one add per input element;
* ``aten::matmul`` (token-to-global similarity): its MACs (default handle);
* ``aten::std_mean`` / ``std`` / ``var`` / ``var_mean`` (the normalisation
  statistics): two per input element;
* ``aten::amax`` (the two-way maxout): one comparison per input element;
* ``aten::mul`` when it is an outer product (each operand broadcast along a
  dimension of the other, as in ``s[h, n] * v[h, c]``): one multiply per
  output element; ordinary element-wise / per-channel scaling stays
  uncounted, as in the convention.

FCViT backbones are analysed on their plain path (``fast_path=False``), whose
ops are the reference's; the fast path computes the same quantities.
"""
import argparse
import os.path as osp
import sys
from collections import Counter
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from tools.analysis.lib.data import synthetic_batch  # noqa: E402
from tools.analysis.lib.models import (build_model_from_config,  # noqa: E402
                                      fcvit_classifier, parse_fcvit_name,
                                      use_plain_path)


# ---------------------------------------------------------------------- #
# handles
# ---------------------------------------------------------------------- #
def _shape(value) -> Optional[Sequence[int]]:
    from mmengine.analysis.jit_handles import get_shape
    return get_shape(value)


def _numel(shape) -> int:
    n = 1
    for s in shape or ():
        n *= int(s)
    return n


def per_input_element(scale: int):
    """``scale`` operations per element of the first input."""

    def handle(inputs, outputs):
        return scale * _numel(_shape(inputs[0]))

    return handle


def outer_product_mul(inputs, outputs):
    """One multiply per output element when both operands are broadcast
    (an outer product); 0 for element-wise or scaling products."""
    shapes = [_shape(v) for v in inputs[:2]]
    out = _shape(outputs[0])
    if any(s is None for s in shapes) or out is None:
        return 0  # a product with a Python scalar
    n_out = _numel(out)
    if all(_numel(s) < n_out for s in shapes):
        return n_out
    return 0


def fcvit_flop_handles() -> Dict:
    """Handles to add to mmengine's FlopAnalyzer (see the module doc)."""
    return {
        'aten::mean': per_input_element(1),
        'aten::std_mean': per_input_element(2),
        'aten::var_mean': per_input_element(2),
        'aten::std': per_input_element(2),
        'aten::var': per_input_element(2),
        'aten::amax': per_input_element(1),
        'aten::mul': outer_product_mul,
    }


def count_flops(model: nn.Module, inputs, show_table: bool = False):
    """(flops, params, uncounted op types) of ``model(*inputs)``."""
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.analysis.print_helper import complexity_stats_table
    use_plain_path(model)
    model.eval()
    inputs = inputs if isinstance(inputs, tuple) else (inputs, )
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**fcvit_flop_handles())
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    flops = analyzer.total()
    params = parameter_count(model)['']
    if show_table:
        print(complexity_stats_table(flops=analyzer, max_depth=3,
                                     show_param_shapes=False))
    return flops, params, Counter(analyzer.unsupported_ops())


# ---------------------------------------------------------------------- #
# models
# ---------------------------------------------------------------------- #
class TensorModeWrapper(nn.Module):
    """An mm-library model's tensor forward on fixed data samples."""

    def __init__(self, model: nn.Module, data_samples):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs):
        return self.model(inputs, self.data_samples, mode='tensor')


def build_from_config(path: str, shape):
    """(wrapped model, inputs, backbone) for a config, with a synthetic
    batch of one image of ``shape`` run through the data preprocessor."""
    model, cfg, scope = build_model_from_config(path)
    model.eval()
    batch = synthetic_batch(scope, cfg.model, 1, shape)
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
    wrapped = TensorModeWrapper(model, data['data_samples'])
    return wrapped, data['inputs'], getattr(model, 'backbone', None)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='FLOPs / params of a config or an FCViT classifier',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('config', help='config file, pkg::path, or fcvit-ARCH')
    p.add_argument('--shape', type=int, nargs='+', default=None,
                   help='input H [W] (default 224 for classifiers, '
                   '1280 800 for detectors, 512 512 for segmentors)')
    p.add_argument('--table', action='store_true',
                   help='print the per-module table')
    args = p.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) == 1:
            args.shape = args.shape * 2
        if len(args.shape) != 2 or min(args.shape) < 32:
            p.error(f'--shape takes H [W] (at least 32), got {args.shape}')
    return args


def main(argv=None):
    args = parse_args(argv)
    import fcvit_mm  # noqa: F401
    name = args.config
    if name.startswith('fcvit-'):
        arch, _ = parse_fcvit_name(name, flags=())
        shape = args.shape or [224, 224]
        model = fcvit_classifier(arch)
        inputs = torch.randn(1, 3, *shape)
        backbone = model.backbone
    else:
        shape = args.shape
        if shape is None:
            shape = [224, 224]
            if 'detection' in name or 'mmdet::' in name:
                shape = [800, 1280]
            elif 'segmentation' in name or 'mmseg::' in name:
                shape = [512, 512]
        model, inputs, backbone = build_from_config(name, shape)
    flops, params, skipped = count_flops(model, inputs, args.table)
    print(f'input shape: 3 x {shape[0]} x {shape[1]}')
    print(f'FLOPs (multiply-adds): {flops / 1e9:.3f} G')
    print(f'parameters: {params / 1e6:.3f} M ({params:,})')
    if backbone is not None:
        bb = sum(p.numel() for p in backbone.parameters())
        print(f'backbone parameters: {bb / 1e6:.3f} M ({bb:,})')
    if skipped:
        print('not counted (element-wise or unsupported): ' +
              ', '.join(f'{k} x{v}' for k, v in sorted(skipped.items())))
    return dict(flops=flops, params=params, shape=shape,
                skipped=dict(skipped))


if __name__ == '__main__':
    main()
