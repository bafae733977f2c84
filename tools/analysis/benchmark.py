#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Throughput and peak memory of FCViT and its peers, measured in one run.

Models are measured in the same process with interleaved repetitions (after
warm-up), and the median time per step is reported, so that ratios hold on a
busy machine. Two kinds of targets:

* image models by name (``--models``): ``fcvit-{tiny,b12,b24,b48}`` (the
  backbone as users build it: default constructor, NCHW input), with the
  suffixes ``-plain`` (``fast_path=False``: the op-by-op transcription),
  ``-cp`` (``with_cp=True``) and ``-cl`` (model and input converted to
  channels-last by hand, as a user could do); ``resnet50``, ``convnext-t``,
  ``poolformer-s12`` (mmpretrain backbones as shipped). Each gets a global
  average pool and a 1000-class linear head, unless ``--backbone-only``
  (then the loss is the sum of the means of the backbone's outputs);
* whole configs (``--configs``; ``pkg::path`` for the libraries' own, e.g.
  ``mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py``; a ``@plain`` suffix
  puts FCViT backbones on their plain path): one iteration on a
  synthetic batch (random images and annotations of the right kind for
  mmdet / mmseg / mmpretrain), training = data preprocessor + loss +
  backward, inference = ``predict``.

A training step is forward + loss + backward (no optimizer update). The
kernel floor (FCViT's GEMMs and depthwise convolutions timed alone) is
``tools/analysis/kernel_floor.py``.

Peak memory (``--memory``): see :mod:`tools.analysis.lib.measure`. By
default each model and mode is measured in a fresh process (one warm-up
step, then the measured one), since an allocator that already served the
timed steps keeps freed blocks resident and the pinned mmap threshold would
change the timings; ``--memory-in process`` measures in the benchmark's own
process after the timings instead.

Examples::

    # the CPU comparison (2 threads, batch 8, 224 x 224)
    python tools/analysis/benchmark.py --models fcvit-b12 resnet50 \\
        convnext-t poolformer-s12
    # dense setting: backbones at 512 x 512, memory with and without with_cp
    python tools/analysis/benchmark.py --models fcvit-b12 fcvit-b12-cp \\
        --backbone-only --batch 2 --size 512 --mode train --memory
    # GPU, AMP and channels-last peers
    python tools/analysis/benchmark.py --device cuda --amp bf16 \\
        --channels-last --batch 64
    # bf16 autocast against float32 on a CPU, both in one run (the
    # "x own none" column: each model's bf16 speed-up)
    python tools/analysis/benchmark.py --models fcvit-b12 resnet50 \\
        --amp none bf16
    # detectors, one iteration each
    python tools/analysis/benchmark.py --configs \\
        configs/detection/maskrcnn_fcvit_b12.py \\
        mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py \\
        --batch 2 --size 800 1333 --mode train
"""
import argparse
import json
import os.path as osp
import statistics
import subprocess
import sys
from typing import List, Optional

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmengine.config import DictAction  # noqa: E402

from tools.analysis.lib import measure  # noqa: E402


def _memory_in_subprocess(spec: str, mode: str, amp: str,
                          args) -> Optional[int]:
    """Peak memory of one target, mode and precision, measured by a fresh
    process of this tool (an allocator that has not been used yet measures
    cleanly)."""
    cmd = [sys.executable, osp.abspath(__file__),
           '--configs' if args.configs else '--models', spec,
           '--mode', mode, '--device', args.device, '--amp', amp,
           '--batch', str(args.batch), '--size', *map(str, args.size),
           '--threads', str(args.threads), '--seed', str(args.seed),
           '--omp-wait-policy', 'inherit', '--memory-only']
    if args.channels_last:
        cmd.append('--channels-last')
    if args.backbone_only:
        cmd.append('--backbone-only')
    if args.cfg_options:
        cmd += ['--cfg-options'] + [f'{k}={v}'
                                    for k, v in args.cfg_options.items()]
    res = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(res.stdout.strip().splitlines()):
        if line.startswith('{'):
            return json.loads(line)['peak']
    raise RuntimeError(f'memory measurement of {spec} ({mode}, {amp}) '
                       f'failed:\n{res.stderr[-2000:]}')


def measure_memory(targets, args) -> dict:
    """``{(name, mode, amp): peak bytes}`` for ``--memory`` (else empty)."""
    memory = {}
    if not args.memory:
        return memory
    for t in targets:
        for m in args.modes:
            for a in args.amps:
                if args.memory_in == 'subprocess':
                    memory[(t.name, m, a)] = _memory_in_subprocess(
                        t.spec, m, a, args)
                else:
                    memory[(t.name, m, a)] = measure.peak_memory(
                        lambda: measure.run_step(t, m, args, a), args.device)
    return memory


def report(targets, times, memory, args) -> List[dict]:
    """Print the table; return its rows. ``ratio``: speed against the
    baseline in the same mode and precision; with several ``--amp``,
    ``amp_ratio``: speed against the same model and mode in the first
    precision (measured in the same run)."""
    rows = []
    baseline = measure.baseline_target(targets, args).name
    first = args.amps[0]
    for m in args.modes:
        for a in args.amps:
            base_t = statistics.median(times[(baseline, m, a)])
            for t in targets:
                ts = times[(t.name, m, a)]
                med = statistics.median(ts)
                mem = memory.get((t.name, m, a))
                rows.append(dict(
                    model=t.name, mode=m, amp=a, params_m=t.params / 1e6,
                    batch=t.images, ms_per_step=med * 1e3,
                    ms_min=min(ts) * 1e3, ms_max=max(ts) * 1e3,
                    images_per_s=t.images / med, ratio=base_t / med,
                    amp_ratio=statistics.median(times[(t.name, m, first)])
                    / med,
                    peak_mem_mb=None if mem is None else mem / 2**20,
                    channels_last=t.channels_last))
    several = len(args.amps) > 1
    w = max([34] + [len(t.name) + 1 for t in targets])
    header = (f'{"model":<{w}} {"mode":<10} {"amp":<5} {"params":>8} '
              f'{"ms/step":>9} {"(min-max)":>17} {"img/s":>8} '
              f'{"x " + baseline:>14}')
    if several:
        header += f' {"x own " + first:>10}'
    if args.memory:
        header += f' {"peak MiB":>9}'
    print(header)
    print('-' * len(header))
    for r in rows:
        line = (f'{r["model"]:<{w}} {r["mode"]:<10} {r["amp"]:<5} '
                f'{r["params_m"]:7.2f}M {r["ms_per_step"]:9.1f} '
                f'{"(%.0f-%.0f)" % (r["ms_min"], r["ms_max"]):>17} '
                f'{r["images_per_s"]:8.2f} {r["ratio"]:14.2f}')
        if several:
            line += f' {r["amp_ratio"]:10.2f}'
        if args.memory:
            mem = r['peak_mem_mb']
            line += f' {"n/a" if mem is None else "%.0f" % mem:>9}'
        print(line)
    return rows


def parse_args(argv=None):
    p = measure.measure_parser(
        'Throughput / peak memory of FCViT and peers, one run', __doc__,
        ['fcvit-b12', 'resnet50', 'convnext-t', 'poolformer-s12'],
        'fcvit-ARCH[-plain][-cp][-cl], resnet50, convnext-t, poolformer-s12')
    p.add_argument('--configs', nargs='+', default=[],
                   help='whole configs to measure instead of --models '
                   '(pkg::path for configs shipped by mmdet/mmseg/...; '
                   '@plain suffix: FCViT on its plain path)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   default={},
                   help='override settings of every --configs config, '
                   'key=value as in the libraries\' tools (e.g. '
                   'model.roi_head.bbox_roi_extractor.roi_layer.'
                   'sampling_ratio=2)')
    p.add_argument('--memory', action='store_true',
                   help='also measure peak memory (separate, untimed step)')
    p.add_argument('--memory-in', choices=['subprocess', 'process'],
                   default='subprocess',
                   help='measure peak memory in a fresh process per model '
                   'and mode (default; clean allocator) or in this one')
    p.add_argument('--memory-only', action='store_true',
                   help=argparse.SUPPRESS)
    return measure.check_measure_args(p, p.parse_args(argv))


def main(argv=None, relaunch: bool = False):
    args = parse_args(argv)
    if args.memory_only:
        measure.malloc_trim(measure.PIN_MMAP_THRESHOLD)  # before allocating
    elif relaunch:
        measure.relaunch_with_wait_policy(args, osp.abspath(__file__), argv)
    measure.setup(args)
    targets = measure.build_targets(args)
    if args.memory_only:  # the child of _memory_in_subprocess
        target, mode = targets[0], args.modes[0]
        measure.run_step(target, mode, args)  # warm-up (args.amp: the one)
        peak = measure.peak_memory(
            lambda: measure.run_step(target, mode, args), args.device)
        print(json.dumps(dict(peak=peak)))
        return None
    print(measure.header(args))
    times = measure.time_steps(targets, args.modes, args)
    rows = report(targets, times, measure_memory(targets, args), args)
    measure.save_rows(args, rows)
    return rows


if __name__ == '__main__':
    main(relaunch=True)
