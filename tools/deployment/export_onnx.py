#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Export a trained model of any of this project's configs to ONNX.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT OUT_DIR \\
        [--shape H W] [--batch N] [--opset 17] [--static] \\
        [--exporter torchscript|dynamo] [--check-image IMG] \\
        [--runtime onnxruntime|openvino]

OUT_DIR receives one ONNX graph per part of the network (classifier: one,
segmentor: one, RetinaNet: two, Mask R-CNN: four), the config and
``deploy.json``. Each graph is checked in ONNX Runtime against PyTorch on the
export input. With ``--check-image``, the library's own inference runs on
the image with the PyTorch model and with the exported one (run by ONNX
Runtime, or OpenVINO with ``--runtime openvino``), and the tool
prints how they compare (exit status 1 if they differ beyond
docs/deployment.md's criteria). Running an export: ``fcvit_mm.deploy.
init_onnx_model(OUT_DIR, runtime=...)`` gives a model that the libraries'
inference functions take (see docs/deployment.md).
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    from fcvit_mm.deploy.export import BACKBONE_FORMS, DEFAULT_OPSET, OPSETS
    p = argparse.ArgumentParser(
        description='Export a model of an mmdet / mmseg / mmpretrain config '
        'to ONNX graphs that ONNX Runtime runs')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('out_dir')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help='export height and width (default: 224 x 224 '
                   'classification, 512 x 512 segmentation, 800 x 1344 '
                   'detection)')
    p.add_argument('--batch', type=int, default=1, help='export batch size')
    p.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                   help=f'ONNX opset (torchscript: {OPSETS["torchscript"]}, '
                   f'dynamo: {OPSETS["dynamo"]}; default {DEFAULT_OPSET})')
    p.add_argument('--static', action='store_true',
                   help='fix batch and image size to the export\'s '
                   '(default: dynamic)')
    p.add_argument('--exporter', choices=sorted(OPSETS),
                   default='torchscript',
                   help='torch.onnx.export(dynamo=False) or (dynamo=True)')
    p.add_argument('--backbone-form', choices=BACKBONE_FORMS,
                   default='deploy',
                   help='which equivalent form of FCViT to export (default '
                   'deploy: its inference form, the smallest graph; '
                   'plain / fast: the training form\'s paths; '
                   'config: as the config builds it)')
    p.add_argument('--check-image', metavar='IMG',
                   help='compare the library\'s inference with PyTorch and '
                   'with the export on this image')
    p.add_argument('--runtime', choices=['onnxruntime', 'openvino'],
                   default='onnxruntime',
                   help='the runtime that --check-image runs the export in')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='detection score threshold of --check-image')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, as in tools/train.py')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from fcvit_mm.deploy import export_model, init_onnx_model
    manifest = export_model(
        args.config, args.checkpoint, args.out_dir, shape=args.shape,
        batch=args.batch, opset=args.opset, dynamic=not args.static,
        exporter=args.exporter, cfg_options=args.cfg_options,
        backbone_form=args.backbone_form)
    for part in manifest['parts']:
        print(f'{osp.join(args.out_dir, part["file"])}: replaces '
              f'{part["replaces"]}; ONNX Runtime vs PyTorch on the export '
              f'input: {part["check_rel_error"]:.1e} of the output scale')
    if not args.check_image:
        return 0
    from fcvit_mm.deploy.export import load_config
    from fcvit_mm.deploy.parity import COMPARE, library_inference
    from fcvit_mm.deploy.runtime import init_library_model
    task = manifest['task']
    cfg, _ = load_config(args.config, args.cfg_options)
    torch_model = init_library_model(cfg, args.checkpoint)
    ref = library_inference(torch_model, task, args.check_image)
    got = library_inference(
        init_onnx_model(args.out_dir, runtime=args.runtime), task,
        args.check_image)
    kwargs = dict(score_thr=args.score_thr) if task == 'detection' else {}
    res = COMPARE[task](ref, got, **kwargs)
    print(json.dumps(dict(check_image=args.check_image,
                          runtime=args.runtime, **res)))
    return 0 if res['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
