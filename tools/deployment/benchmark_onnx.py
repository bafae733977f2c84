#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Deployed speed of FCViT models against their ResNet-50 peers, in one
run: PyTorch eager, ``torch.compile``, and the same ONNX export
(tools/deployment/export_onnx.py's settings, random weights) in each
runtime of ``fcvit_mm.deploy.backends.RUNTIMES`` (ONNX Runtime, OpenVINO)
and each precision of ``--precision`` that the runtime runs (float32, and
bf16 in OpenVINO; a column each, e.g. ``openvino bf16``). The run starts by
saying which bf16 units the CPU has (``/proc/cpuinfo``: AMX, AVX-512 bf16)
and leaves out bf16 where OpenVINO cannot run it on this CPU.

* ``cls``: the FCViT-B12 ImageNet classifier (the export's default form, and
  a row for the plain-path export) against mmpretrain's ResNet-50, the
  network alone (backbone, neck, head) on batches of random 224 x 224
  images, for each batch size of ``--batch``;
* ``det``: Mask R-CNN FCViT-B12 against mmdet's Mask R-CNN R-50, one
  800 x 1333 image end to end through ``init_onnx_model`` and
  ``inference_detector`` (test pipeline, data preprocessor, the four graphs,
  mmdet's post-processing), with the RCNN score threshold at 0 so that the
  mask head runs on the full 100 detections of a busy image;
* ``seg``: Semantic FPN FCViT-B12 against mmseg's FPN R-50, one 512 x 512
  image end to end through ``init_onnx_model`` and ``inference_model``.

For ``det`` and ``seg`` a second table gives the part of the same calls
spent inside the exported graphs (and a line the milliseconds outside
them); ``--det-sampling-ratio`` sets both detectors' RoIAlign sampling.

Repetitions are interleaved across models and runtimes and the median is
reported, with the ratio to the ResNet-50 model in the same runtime and
precision (the last model of each table is the baseline), and each bf16
column's speed-up over the same runtime's float32. ``--profile`` adds the
time per operator type of the FCViT and ResNet-50 classifier graphs in each
column: ONNX Runtime's profiler (its trace is written to a temporary folder
and deleted) and OpenVINO's per-layer performance counters.

    python tools/deployment/benchmark_onnx.py --tasks cls det seg \\
        --batch 8 1 --threads 2 --precision fp32 bf16 --profile
"""
import argparse
import math
import os.path as osp
import statistics
import sys
import tempfile
import time
from collections import defaultdict

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

ROOT = osp.join(osp.dirname(osp.abspath(__file__)), '..', '..')
#: export_model arguments of the plain-path export of FCViT (a row of its
#: own beside the export's default form)
PLAIN = dict(backbone_form='plain')
#: name -> (config, export_model arguments); the last one is the baseline
CLS = {'fcvit-b12': ('configs/classification/fcvit_b12_in1k.py', {}),
       'fcvit-b12-plain': ('configs/classification/fcvit_b12_in1k.py',
                           PLAIN),
       'resnet50': ('mmpretrain::resnet/resnet50_8xb32_in1k.py', {})}
DET = {'maskrcnn-fcvit-b12': ('configs/detection/maskrcnn_fcvit_b12.py', {}),
       'maskrcnn-r50': ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', {})}
SEG = {'fpn-fcvit-b12': ('configs/segmentation/fpn_fcvit_b12_ade20k.py', {}),
       'fpn-r50': ('mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py', {})}
#: the PyTorch columns (classifier only)
PYTORCH = ('eager', 'compile')


def parse_args(argv=None):
    from fcvit_mm.deploy.backends import PRECISIONS, RUNTIMES
    choices = list(PYTORCH) + list(RUNTIMES)
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tasks', nargs='+', choices=['cls', 'det', 'seg'],
                   default=['cls', 'det', 'seg'])
    p.add_argument('--runtimes', nargs='+', choices=choices,
                   default=choices,
                   help='eager and compile: PyTorch (classifier only); the '
                   'others: the deployment runtimes')
    p.add_argument('--precision', nargs='+', choices=list(PRECISIONS),
                   default=list(PRECISIONS),
                   help='precisions of the deployed columns, each where the '
                   'runtime runs it (default: all)')
    compiled = p.add_argument_group('the torch.compile column')
    compiled.add_argument('--no-compile', action='store_true',
                          help='leave it out (inductor compiles the models '
                          'for minutes on 2 cores)')
    compiled.add_argument('--freezing', action='store_true',
                          help="inductor's freezing (torch._inductor.config."
                          "freezing = True: weights taken as constants, "
                          "PyTorch's advice for CPU inference), for every "
                          'compiled model')
    compiled.add_argument('--compile-backend', default='inductor',
                          help='its backend (default: inductor)')
    p.add_argument('--threads', type=int, default=2,
                   help='threads of every runtime')
    p.add_argument('--batch', type=int, nargs='+', default=[8, 1],
                   help='classifier batch sizes')
    p.add_argument('--size', type=int, default=224, help='classifier size')
    p.add_argument('--det-size', type=int, nargs=2, default=(800, 1333),
                   metavar=('H', 'W'))
    p.add_argument('--det-sampling-ratio', type=int,
                   help="sampling points per bin of both detectors' RoIAlign "
                   "(mmdet's 0: adaptive, so its cost follows the proposals' "
                   'sizes, which random weights make differ between the '
                   'detectors; e.g. 2 makes it the same for both)')
    p.add_argument('--seg-size', type=int, nargs=2, default=(512, 512),
                   metavar=('H', 'W'))
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--exporter', default='torchscript')
    p.add_argument('--profile', action='store_true',
                   help='time per operator type of the classifier graphs in '
                   'each deployed column')
    p.add_argument('--work-dir', help='where the exports go (default: a '
                   'temporary folder, deleted at the end)')
    args = p.parse_args(argv)
    if args.no_compile and 'compile' in args.runtimes:
        args.runtimes.remove('compile')
    return args


def _config(path):
    return path if '::' in path else osp.join(ROOT, path)


def _export(name, path, options, args, shape, work, cfg_options=None):
    """Export one model; its folder, or None if the export failed (said,
    the rest of the run goes on)."""
    from fcvit_mm.deploy import export_model
    out = osp.join(work, name)
    t = time.perf_counter()
    try:
        export_model(_config(path), None, out, shape=shape, batch=1,
                     opset=args.opset, exporter=args.exporter,
                     cfg_options=cfg_options, **options)
    except Exception as e:  # noqa: BLE001  (reported, the rest runs)
        print(f'{name}: export failed: {type(e).__name__}: '
              f'{str(e).splitlines()[0][:200]}', flush=True)
        return None
    print(f'exported {name} in {time.perf_counter() - t:.0f} s', flush=True)
    return out


def deployed_columns(args) -> dict:
    """label (``'<runtime> <precision>'``) -> (runtime, precision) of the
    deployed columns: each runtime of ``args.runtimes`` in each precision
    of ``args.precision`` that it runs on this machine (one left out is
    said)."""
    import warnings

    from fcvit_mm.deploy.backends import (RUNTIMES, PrecisionFallbackWarning,
                                          session_precision)
    columns = {}
    for rt in args.runtimes:
        if rt not in RUNTIMES:
            continue
        for precision in args.precision:
            if precision not in RUNTIMES[rt].precisions:
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always', PrecisionFallbackWarning)
                runs = session_precision(rt, precision)
            if runs != precision:
                print(f'{rt} {precision} left out: {caught[0].message}')
                continue
            columns[f'{rt} {precision}'] = (rt, precision)
    return columns


def _deployed(out, args):
    """column label -> the export's library model in that runtime and
    precision."""
    from fcvit_mm.deploy import init_onnx_model
    return {label: init_onnx_model(out, threads=args.threads, runtime=rt,
                                   precision=precision)
            for label, (rt, precision) in args.columns.items()}


def _pad32(size):
    return tuple(int(math.ceil(s / 32) * 32) for s in size)


def _interleaved(fns: dict, repeats: int) -> dict:
    """key -> median seconds of ``fn()`` over interleaved repetitions,
    after one warm-up call each (the analysis tools' timer)."""
    from tools.analysis.lib.measure import interleaved
    times = interleaved(fns, warmup=1, reps=repeats)
    return {k: statistics.median(v) for k, v in times.items()}


def _report(title, per_image: dict, models, baseline: str) -> dict:
    """Print images/s and the ratio to ``baseline`` in the same column
    (runtime and precision), then each bf16 column's speed-up over float32
    in the same runtime; ``per_image``: (column, model) -> seconds per
    image. Returns {column: {model: (images/s, ratio or None)}}."""
    runtimes = sorted(dict.fromkeys(k[0] for k in per_image),
                      key=lambda column: column not in PYTORCH)
    print(f'\n{title}\n  images/s (ratio to {baseline} in the same '
          'runtime)')
    print('  ' + f'{"model":22s}' + ''.join(f'{rt:>20s}' for rt in runtimes))
    table = defaultdict(dict)
    for model in models:
        cells = []
        for rt in runtimes:
            sec = per_image.get((rt, model))
            if sec is None:
                cells.append(f'{"-":>20s}')
                continue
            base = per_image.get((rt, baseline))
            ratio = base / sec if base else None
            table[rt][model] = (1 / sec, ratio)
            cells.append(f'{1 / sec:11.3g} ' + (f'{ratio:6.2f}x' if ratio
                                                 else f'{"-":>7s}'))
        print(f'  {model:22s}' + ''.join(cells))
    for rt in runtimes:
        fp32 = rt.replace(' bf16', ' fp32')
        if rt.endswith(' bf16') and fp32 in table:
            print(f'  {rt} / {fp32}: ' + ', '.join(
                f'{m} {table[rt][m][0] / table[fp32][m][0]:.2f}x'
                for m in models if m in table[rt] and m in table[fp32]))
    return dict(table)


def bench_cls(args, work) -> dict:
    import torch

    from fcvit_mm.utils.config import build_model, load_task_config
    size = (args.size, args.size)
    fns, graphs = {}, {}
    for name, (path, options) in CLS.items():
        out = _export(name, path, options, args, size, work)
        if out is None:
            continue
        graphs[name] = osp.join(out, 'classifier.onnx')
        for rt, model in _deployed(out, args).items():
            fns[(rt, name)] = model.onnx_parts['classifier']
        if options or not {'eager', 'compile'} & set(args.runtimes):
            continue  # PyTorch rows: the model as the config builds it
        torch.manual_seed(0)
        model = build_model(load_task_config(_config(path))[0])

        def logits(x, model=model):
            return model.head(model.extract_feat(x))
        if 'eager' in args.runtimes:
            fns[('eager', name)] = logits
        if 'compile' in args.runtimes:
            if args.freezing:
                import torch._inductor.config as inductor_config
                inductor_config.freezing = True
            fns[('compile', name)] = torch.compile(
                logits, backend=args.compile_backend)
    results = {}
    for batch in args.batch:
        x = torch.rand(batch, 3, *size) * 2 - 1

        def call(fn, x=x):
            with torch.inference_mode():
                fn(x)
        t = time.perf_counter()
        sec = _interleaved({k: (lambda f=f: call(f)) for k, f in
                            fns.items()}, args.repeats)
        print(f'(timed batch {batch} in {time.perf_counter() - t:.0f} s)')
        results[batch] = _report(
            f'classifier (backbone, neck, head), batch {batch}, '
            f'{size[0]} x {size[1]}, {args.threads} threads',
            {k: s / batch for k, s in sec.items()}, list(CLS),
            list(CLS)[-1])
    if args.profile:
        x = torch.rand(args.batch[0], 3, *size) * 2 - 1
        for name in (list(CLS)[0], list(CLS)[-1]):
            if name in graphs:
                results[f'profile {name}'] = profile(graphs[name], x, args)
    return results


class _TimedSession:
    """A deployed part's session that adds the wall time of each run to
    ``clock['s']`` (the tool's wrapper: the library model is unchanged)."""

    def __init__(self, session, clock: dict):
        self.session, self.clock = session, clock
        self.inputs = session.inputs

    def run(self, feed):
        start = time.perf_counter()
        try:
            return self.session.run(feed)
        finally:
            self.clock['s'] += time.perf_counter() - start


def _graph_timed(model, fn, graph_times: list):
    """``fn`` that also appends the seconds spent in ``model``'s exported
    graphs during each call to ``graph_times``."""
    clock = {'s': 0.0}
    for part in model.onnx_parts.values():
        part.session = _TimedSession(part.session, clock)

    def call():
        clock['s'] = 0.0
        result = fn()
        graph_times.append(clock['s'])
        return result

    return call


def det_cfg_options(args) -> dict:
    """The detectors' config changes of the run: RCNN score threshold 0
    (the mask head on 100 detections), and ``--det-sampling-ratio``."""
    options = {'model.test_cfg.rcnn.score_thr': 0.0}
    if args.det_sampling_ratio is not None:
        for extractor in ('bbox_roi_extractor', 'mask_roi_extractor'):
            options[f'model.roi_head.{extractor}.roi_layer.sampling_ratio'] \
                = args.det_sampling_ratio
    return options


def _bench_image(task, table, args, size, cfg_options=None) -> tuple:
    """One random image of ``size`` through the library's inference of
    each model of ``table`` in each deployed runtime, interleaved, and the
    part of that time spent in the exported graphs (the rest is the
    library's pipeline and its CPU ops: with random weights, e.g. RoIAlign
    and NMS work on different proposals in each detector). Returns the
    two tables of :func:`_report`: (end to end, graphs alone)."""
    import numpy as np

    from fcvit_mm.deploy.parity import library_inference
    img = np.random.default_rng(0).integers(0, 256, (*size, 3),
                                            dtype=np.uint8)
    fns, counts, graph_times = {}, {}, {}
    for name, (path, options) in table.items():
        out = _export(name, path, options, args, _pad32(size), args.work,
                      cfg_options)
        if out is None:
            continue
        for rt, model in _deployed(out, args).items():
            graph_times[(rt, name)] = []
            fns[(rt, name)] = _graph_timed(
                model, lambda m=model: library_inference(m, task, img),
                graph_times[(rt, name)])
            if task == 'detection':
                counts[name] = len(fns[(rt, name)]().pred_instances)
    sec = _interleaved(fns, args.repeats)
    what = (f', {max(counts.values())} detections' if counts else '')
    title = f'{task}, 1 image {size[0]} x {size[1]} end to end{what}'
    result = _report(f'{title}, {args.threads} threads', sec, list(table),
                     list(table)[-1])
    in_graphs = {k: statistics.median(v[-args.repeats:])
                 for k, v in graph_times.items()}
    graphs = _report(
        f'{task}: the same calls, time in the exported graphs alone',
        in_graphs, list(table), list(table)[-1])
    print('  outside the graphs (pipeline, library ops), ms per image: ' +
          ', '.join(f'{name} {rt} {1e3 * (sec[(rt, name)] - t):.0f}'
                    for (rt, name), t in in_graphs.items()))
    return result, graphs


def _op_kind_ort(args: dict) -> str:
    """Operator type of a profiled ONNX Runtime node; convolutions split by
    kernel size and depthwise (from the weight's shape (out, in / groups,
    kh, kw))."""
    op = args['op_name']
    shapes = [next(iter(t.values())) for t in args.get('input_type_shape',
                                                      [])]
    if op == 'Conv' and len(shapes) >= 2 and len(shapes[1]) == 4:
        out, per_group, kh, kw = shapes[1]
        dw = per_group == 1 and shapes[0][1] == out and out > 1
        return f'Conv {kh}x{kw}' + (' depthwise' if dw else '')
    return op


def _op_kind_ov(node_type: str, exec_type: str) -> str:
    """OpenVINO layer type; convolutions split into depthwise and 1x1 by
    the implementation's name (e.g. ``brgconv_avx512_dw_f32``)."""
    if node_type in ('Convolution', 'GroupConvolution'):
        if '_dw' in exec_type:
            return 'Convolution depthwise'
        if '1x1' in exec_type:
            return 'Convolution 1x1'
        return 'Convolution'
    return node_type


def profile(path, x, args, runs=3, top=10) -> dict:
    """Share of operator time per operator type of one graph over ``runs``
    runs after a warm-up run, in each deployed column whose runtime has a
    profiler (ONNX Runtime, OpenVINO): {column: {kind: share}}."""
    import json

    from fcvit_mm.deploy.backends import open_session
    feed_x = x.numpy()
    shares = {}
    for label, (rt, precision) in args.columns.items():
        if rt not in ('onnxruntime', 'openvino'):
            continue
        by_op = defaultdict(float)
        if rt == 'onnxruntime':
            with tempfile.TemporaryDirectory() as tmp:
                sess = open_session(path, rt, args.threads, precision,
                                    profile_prefix=osp.join(tmp, 'ort'))
                for _ in range(runs + 1):
                    sess.run({sess.inputs[0].name: feed_x})
                with open(sess.session.end_profiling()) as f:
                    events = json.load(f)
            starts = sorted(e['ts'] for e in events
                            if e.get('name') == 'model_run')
            for e in events:  # the nodes of the runs after the warm-up
                if (e.get('cat') == 'Node' and e['ts'] >= starts[1]
                        and e['name'].endswith('_kernel_time')):
                    by_op[_op_kind_ort(e['args'])] += e['dur']
        else:
            sess = open_session(path, rt, args.threads, precision,
                                profile=True)
            sess.run({sess.inputs[0].name: feed_x})  # warm-up
            for _ in range(runs):
                sess.run({sess.inputs[0].name: feed_x})
                for node_type, exec_type, us in sess.profile():
                    by_op[_op_kind_ov(node_type, exec_type)] += us
        total = sum(by_op.values()) or 1.0
        shares[label] = {k: v / total for k, v in by_op.items()}
        print(f'\n  {label} profile of {osp.basename(osp.dirname(path))} '
              f'(share of operator time):')
        for op, share in sorted(shares[label].items(),
                                key=lambda kv: -kv[1])[:top]:
            print(f'    {op:24s} {100 * share:5.1f}%')
    return shares


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    tmp = None
    if not args.work_dir:
        tmp = tempfile.TemporaryDirectory(prefix='fcvit_onnx_bench_')
    args.work = args.work_dir or tmp.name
    from fcvit_mm.utils.cpu import describe_cpu
    print(describe_cpu())  # AMX, AVX-512 bf16
    args.columns = deployed_columns(args)
    columns = [r for r in args.runtimes if r in PYTORCH] + list(args.columns)
    print(f'exports under {args.work}; opset {args.opset}, {args.exporter} '
          f'exporter, dynamic shapes, random weights; columns '
          f'{", ".join(columns)}')
    results = {}
    try:
        if 'cls' in args.tasks:
            results['cls'] = bench_cls(args, args.work)
        if 'det' in args.tasks:
            results['det'], results['det graphs'] = _bench_image(
                'detection', DET, args, tuple(args.det_size),
                det_cfg_options(args))
        if 'seg' in args.tasks:
            results['seg'], results['seg graphs'] = _bench_image(
                'segmentation', SEG, args, tuple(args.seg_size))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return results


if __name__ == '__main__':
    main()
