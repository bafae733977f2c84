#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""ONNX Runtime throughput of FCViT models against their ResNet-50 peers,
exported the same way (tools/deployment/export_onnx.py's settings), in one
run, random weights.

* ``cls``: the FCViT-B12 ImageNet classifier (its plain-path and fast-path
  graphs) against mmpretrain's ResNet-50, the classifier graph alone on a
  batch of random 224 x 224 images;
* ``det``: Mask R-CNN FCViT-B12 against mmdet's Mask R-CNN R-50, the whole
  inference of one 800 x 1333 image (data preprocessor, the four graphs,
  mmdet's post-processing in Python), with the detection score threshold at
  0 so that every image has 100 detections (the mask head runs on 100 RoIs,
  as for a trained model on a busy COCO image).

Repetitions are interleaved across models and the median is reported, with
the ratio to the ResNet-50 model. ``--profile`` adds ONNX Runtime's profile
of the FCViT and ResNet-50 classifier graphs, time per operator type.

    python tools/deployment/benchmark_onnx.py --tasks cls det --threads 2
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from collections import defaultdict

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

CLS = {'fcvit-b12': ('configs/classification/fcvit_b12_in1k.py', False),
       'fcvit-b12-fast': ('configs/classification/fcvit_b12_in1k.py', True),
       'resnet50': ('mmpretrain::resnet/resnet50_8xb32_in1k.py', None)}
DET = {'maskrcnn-fcvit-b12': ('configs/detection/maskrcnn_fcvit_b12.py',
                              False),
       'maskrcnn-r50': ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
                        None)}
ROOT = osp.join(osp.dirname(osp.abspath(__file__)), '..', '..')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tasks', nargs='+', choices=['cls', 'det'],
                   default=['cls', 'det'])
    p.add_argument('--threads', type=int, default=2,
                   help='ONNX Runtime intra-op threads')
    p.add_argument('--batch', type=int, default=8, help='classifier batch')
    p.add_argument('--size', type=int, default=224, help='classifier size')
    p.add_argument('--det-size', type=int, nargs=2, default=(800, 1333),
                   metavar=('H', 'W'))
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--exporter', default='torchscript')
    p.add_argument('--profile', action='store_true',
                   help='time per ONNX operator type of the classifiers')
    p.add_argument('--work-dir', help='where the exports go (default: a '
                   'temporary folder)')
    return p.parse_args(argv)


def _config(path):
    return path if '::' in path else osp.join(ROOT, path)


def _export(name, path, fast, args, shape, work, cfg_options=None):
    from fcvit_mm.deploy import export_model, init_onnx_model
    out = osp.join(work, name)
    t = time.perf_counter()
    export_model(_config(path), None, out, shape=shape, batch=1,
                 opset=args.opset, exporter=args.exporter,
                 backbone_fast_path=fast, cfg_options=cfg_options)
    print(f'exported {name} in {time.perf_counter() - t:.0f} s',
          flush=True)
    return out, init_onnx_model(out, threads=args.threads)


def _interleaved(fns: dict, repeats: int) -> dict:
    """name -> median seconds of ``fn()`` over interleaved repetitions,
    after one warm-up call each."""
    for fn in fns.values():
        fn()
    times = defaultdict(list)
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def _report(title, per_image: dict, baseline: str):
    print(f'\n{title}')
    base = per_image[baseline]
    for name, sec in per_image.items():
        print(f'  {name:22s} {1 / sec:8.3g} images/s  {sec:7.3f} s/image  '
              f'{base / sec:5.2f}x {baseline}')


def bench_cls(args, work):
    import torch
    models = {}
    for n, (p, f) in CLS.items():
        try:
            models[n] = _export(n, p, f, args, (args.size, args.size), work)
        except Exception as e:  # noqa: BLE001  (reported, the rest runs)
            print(f'{n}: export failed: {type(e).__name__}: '
                  f'{str(e).splitlines()[0][:200]}')
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    fns = {n: (lambda m=m: m.onnx_parts['classifier'](x))
           for n, (_, m) in models.items()}
    sec = _interleaved(fns, args.repeats)
    _report(f'classifier graph, batch {args.batch}, {args.size} x '
            f'{args.size}, {args.threads} ORT threads',
            {n: s / args.batch for n, s in sec.items()}, 'resnet50')
    if args.profile:
        for name in ('fcvit-b12', 'resnet50'):
            profile(osp.join(models[name][0], 'classifier.onnx'), x, args)


def bench_det(args, work):
    import torch
    from mmengine.config import Config

    from fcvit_mm.utils.config import resolve_config_path
    from tools.analysis.lib.data import synthetic_batch
    opts = {'model.test_cfg.rcnn.score_thr': 0.0}
    models = {n: _export(n, p, f, args, (800, 1344), work, opts)
              for n, (p, f) in DET.items()}
    cfg = Config.fromfile(resolve_config_path(_config(DET['maskrcnn-r50'][
        0])))
    batch = synthetic_batch('mmdet', cfg.model, 1, args.det_size)

    def run(model):
        with torch.no_grad():
            out = model.test_step(batch)
        assert len(out[0].pred_instances) == 100, len(out[0].pred_instances)
    fns = {n: (lambda m=m: run(m)) for n, (_, m) in models.items()}
    sec = _interleaved(fns, args.repeats)
    _report(f'Mask R-CNN inference, 1 image {args.det_size[0]} x '
            f'{args.det_size[1]}, 100 detections, {args.threads} ORT '
            'threads', sec, 'maskrcnn-r50')


def _op_kind(args: dict) -> str:
    """Operator type of a profiled node; convolutions split by kernel size
    and depthwise (from the weight's shape (out, in / groups, kh, kw))."""
    op = args['op_name']
    shapes = [next(iter(t.values())) for t in args.get('input_type_shape',
                                                      [])]
    if op == 'Conv' and len(shapes) >= 2 and len(shapes[1]) == 4:
        out, per_group, kh, kw = shapes[1]
        dw = per_group == 1 and shapes[0][1] == out and out > 1
        return f'Conv {kh}x{kw}' + (' depthwise' if dw else '')
    return op


def profile(path, x, args, top=10):
    """ONNX Runtime's own profile of one graph: share of time per
    operator type over a few runs."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.enable_profiling = True
    opts.profile_file_prefix = osp.splitext(path)[0] + '_profile'
    sess = ort.InferenceSession(path, opts,
                                providers=['CPUExecutionProvider'])
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x.numpy()})
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    by_op = defaultdict(float)
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            by_op[_op_kind(e['args'])] += e['dur']
    total = sum(by_op.values())
    print(f'\n  ONNX Runtime profile of {osp.basename(osp.dirname(path))} '
          f'(share of operator time):')
    for op, dur in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]:
        print(f'    {op:24s} {100 * dur / total:5.1f}%')
    os.remove(trace)


def main(argv=None):
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    work = args.work_dir or tempfile.mkdtemp(prefix='fcvit_onnx_bench_')
    print(f'exports under {work}; opset {args.opset}, {args.exporter} '
          'exporter, dynamic shapes, random weights')
    if 'cls' in args.tasks:
        bench_cls(args, work)
    if 'det' in args.tasks:
        bench_det(args, work)


if __name__ == '__main__':
    main()
