#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Export a trained model of any of this project's configs to ONNX.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT OUT_DIR \\
        [--shape H W] [--batch N] [--opset 17] [--static] \\
        [--exporter torchscript|dynamo] [--check-image IMG] \\
        [--runtime onnxruntime|openvino] [--precision fp32|bf16]

OUT_DIR receives one ONNX graph per part of the network (classifier: one,
segmentor: one, RetinaNet: two, Mask R-CNN: four), the config and
``deploy.json``. Each graph is checked in ONNX Runtime against PyTorch on the
export input. With ``--check-image``, the library's own inference runs on
the image with the PyTorch model and with the exported one (run by ONNX
Runtime, or another runtime of ``fcvit_mm.deploy.backends.RUNTIMES`` with
``--runtime``, in float32 or with ``--precision bf16`` in bf16 where the
runtime runs it), and the tool prints how they compare (exit status 1 if
they differ beyond docs/deployment.md's criteria for that precision).
Running an export: ``fcvit_mm.deploy.init_onnx_model(OUT_DIR, runtime=...,
precision=...)`` gives a model that the libraries' inference functions take
(see docs/deployment.md).
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    from fcvit_mm.deploy.backends import PRECISIONS, RUNTIMES
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
    check = p.add_argument_group(
        '--check-image', 'compare the library\'s inference of the PyTorch '
        'model and of the export on an image, in a runtime and precision')
    check.add_argument('--check-image', metavar='IMG')
    check.add_argument('--runtime', choices=list(RUNTIMES),
                       default='onnxruntime')
    check.add_argument('--precision', choices=list(PRECISIONS),
                       default='fp32',
                       help='bf16: in OpenVINO; float32 where the CPU has no '
                       'bf16 (default fp32)')
    check.add_argument('--score-thr', type=float, default=0.3,
                       help='detection score threshold')
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
    from fcvit_mm.deploy.parity import compare, library_inference
    from fcvit_mm.deploy.runtime import init_library_model
    from fcvit_mm.utils.config import load_task_config
    task = manifest['task']
    cfg, _ = load_task_config(args.config, args.cfg_options)
    torch_model = init_library_model(cfg, args.checkpoint)
    ref = library_inference(torch_model, task, args.check_image)
    deployed = init_onnx_model(args.out_dir, runtime=args.runtime,
                               precision=args.precision)
    got = library_inference(deployed, task, args.check_image)
    kwargs = dict(score_thr=args.score_thr) if task == 'detection' else {}
    res = compare(task, ref, got, deployed.onnx_precision, **kwargs)
    print(json.dumps(dict(check_image=args.check_image,
                          runtime=args.runtime,
                          precision=deployed.onnx_precision, **res)))
    return 0 if res['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
