#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The kernel floor of FCViT's fast path: how fast a step could be with
these GEMM and depthwise kernels if nothing else took any time.

The model's own 1x1 products (MKL GEMMs, with their backward products in
training) and depthwise convolutions (with their GELU, forward and backward
in training) are recorded with their exact shapes during one step
(:class:`fcvit_mm.models.backbones.fcvit_ops.KernelRecorder`) and then
timed alone: each distinct shape run a few times in a row on the same
tensors (GEMM outputs preallocated), the best time kept, times the number
of calls. Their sum is a lower bound of the step time with these kernels,
whatever is done to the rest of the model (stem, norms, global context,
copies, allocation). Each repetition also times one step of the model and
one of the baseline (``--baseline``, default ResNet-50), so that the ratios
hold when the machine's speed drifts; medians are reported, with the
throughput ratio to the baseline that the floor would give ("best") next
to the measured one.

    python tools/analysis/kernel_floor.py --models fcvit-b12 --reps 5

Only FCViT models on the fast path have recorded kernels; other models are
skipped with a note.
"""
import os.path as osp
import statistics
import sys
from collections import Counter
from typing import Dict, List, Optional

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from tools.analysis.lib import measure  # noqa: E402
from fcvit_mm.models.backbones import fcvit_ops  # noqa: E402

#: consecutive runs of each kernel per repetition (best kept)
FLOOR_TRIES = 3


def record_kernels(target, mode: str, args) -> fcvit_ops.KernelRecorder:
    """The fast path's kernel calls during one step of ``target``."""
    with fcvit_ops.KernelRecorder() as rec:
        measure.run_step(target, mode, args)
    return rec


def gemm_dtype(args) -> torch.dtype:
    """The dtype of the step's GEMMs: autocast's under ``--amp``."""
    return dict(bf16=torch.bfloat16, fp16=torch.float16).get(
        args.amp, torch.float32)


def _gemm_job(M: int, K: int, N: int, train: bool, device,
              dtype=torch.float32):
    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    x, w, b, g = rand(M, K), rand(N, K), rand(N), rand(M, N)
    # outputs preallocated: the floor leaves allocation out
    y, gx, gw = x.new_empty(M, N), x.new_empty(M, K), x.new_empty(K, N)

    def products():
        with torch.no_grad():
            torch.addmm(b, x, w.t(), out=y)
            if train:  # input and weight gradients
                torch.mm(g, w, out=gx)
                torch.mm(x.t(), g, out=gw)

    return products


def _depthwise_job(shape, conv, gelu: bool, train: bool, args):
    x = torch.randn(shape, device=args.device).contiguous(
        memory_format=torch.channels_last).requires_grad_(train)
    g = torch.randn(shape, device=args.device).contiguous(
        memory_format=torch.channels_last)

    def depthwise():
        with torch.set_grad_enabled(train), measure.autocast_ctx(args):
            y = fcvit_ops.depthwise_conv(
                x, conv, gelu, kernels=fcvit_ops.device_kernels(x.device))
        if train:
            y.backward(g)
            x.grad = None
            conv.zero_grad(set_to_none=True)

    return depthwise


def floor_jobs(target, mode: str, args) -> Optional[List[tuple]]:
    """``(kind, fn, count)`` for each distinct GEMM / depthwise call of one
    step of ``target`` (``fn`` runs it once); None without such calls."""
    rec = record_kernels(target, mode, args)
    if not rec.calls:
        return None
    train = mode == 'train'
    jobs = [('gemm', _gemm_job(*shape, train, args.device,
                               gemm_dtype(args)), count)
            for shape, count in Counter(rec.gemms).items()]
    jobs += [('depthwise', _depthwise_job(*call, train, args), count)
             for call, count in Counter(rec.depthwise).items()]
    return jobs


def _kernel_times(jobs, device) -> Dict[str, float]:
    acc = dict(gemm=0., depthwise=0.)
    for kind, fn, count in jobs:
        acc[kind] += count * min(
            measure.timed(fn, device) for _ in range(FLOOR_TRIES))
    return acc


def measure_floor(target, base, mode: str, args) -> Optional[dict]:
    """Medians of the floor, the step and the baseline's step, one of each
    per repetition; None if ``target`` runs no fast-path kernels."""
    jobs = floor_jobs(target, mode, args)
    if jobs is None:
        return None
    for _ in range(args.warmup):
        measure.run_step(target, mode, args)
        measure.run_step(base, mode, args)
    for _, fn, _ in jobs:
        fn()  # warm-up
    steps, base_ts, sums = [], [], []
    for _ in range(args.reps):
        base_ts.append(measure.timed(
            lambda: measure.run_step(base, mode, args), args.device))
        steps.append(measure.timed(
            lambda: measure.run_step(target, mode, args), args.device))
        sums.append(_kernel_times(jobs, args.device))
    totals = [s['gemm'] + s['depthwise'] for s in sums]
    i = totals.index(statistics.median_low(totals))
    return dict(gemm=sums[i]['gemm'], depthwise=sums[i]['depthwise'],
                total=totals[i], step=statistics.median(steps),
                baseline=statistics.median(base_ts))


#: the shapes that measure the machine's rates: a square GEMM, and an 11x11
#: depthwise convolution at FCViT-B12's first stage (batch 8)
RATE_GEMM = 1024
RATE_DEPTHWISE = (8, 64, 56, 56)


def machine_rates(args) -> Dict[str, float]:
    """This machine's multiply-adds per second (G/s) in the step's
    precision: a large square GEMM (``gemm``, the limit of the 1x1
    products), and an 11x11 depthwise convolution forward with the
    kernels the fast path uses (``depthwise``); best of a few runs."""
    n = RATE_GEMM
    products = _gemm_job(n, n, n, False, args.device, gemm_dtype(args))
    conv = torch.nn.Conv2d(RATE_DEPTHWISE[1], RATE_DEPTHWISE[1], 11,
                           padding=5, groups=RATE_DEPTHWISE[1])
    depthwise = _depthwise_job(RATE_DEPTHWISE, conv.to(args.device), False,
                               False, args)
    dw_macs = torch.Size(RATE_DEPTHWISE).numel() * 11 * 11
    rates = {}
    for name, fn, macs in (('gemm', products, n**3),
                           ('depthwise', depthwise, dw_macs)):
        fn()  # warm-up
        best = min(measure.timed(fn, args.device) for _ in range(5))
        rates[name] = macs / best / 1e9
    return rates


def report(results: Dict[tuple, dict], baseline: str) -> List[dict]:
    print('kernel floor: the 1x1 GEMMs and depthwise convolutions (+GELU) '
          'of the step, timed alone with their exact shapes (warm, nothing '
          'else), median of the repetitions; "best" = throughput ratio to '
          f'{baseline} (timed next to it) if the step took only that long')
    header = (f'{"model":<24} {"mode":<10} {"GEMMs ms":>9} '
              f'{"dw ms":>8} {"floor ms":>9} {"step ms":>9} '
              f'{baseline + " ms":>14} {"x " + baseline:>12} '
              f'{"best x " + baseline:>16}')
    print(header)
    print('-' * len(header))
    rows = []
    for (name, m), fl in results.items():
        r = dict(model=name, mode=m, floor_ms=fl['total'] * 1e3,
                 floor_gemm_ms=fl['gemm'] * 1e3,
                 floor_depthwise_ms=fl['depthwise'] * 1e3,
                 ms_per_step=fl['step'] * 1e3,
                 baseline_ms=fl['baseline'] * 1e3,
                 ratio=fl['baseline'] / fl['step'],
                 floor_ratio=fl['baseline'] / fl['total'])
        rows.append(r)
        print(f'{name:<24} {m:<10} {r["floor_gemm_ms"]:9.1f} '
              f'{r["floor_depthwise_ms"]:8.1f} {r["floor_ms"]:9.1f} '
              f'{r["ms_per_step"]:9.1f} {r["baseline_ms"]:14.1f} '
              f'{r["ratio"]:12.2f} {r["floor_ratio"]:16.2f}')
    return rows


def parse_args(argv=None):
    p = measure.measure_parser('Kernel floor of FCViT models (fast path)',
                               __doc__, ['fcvit-b12'],
                               'fcvit-ARCH[-cp][-cl] (fast path)')
    args = measure.check_measure_args(p, p.parse_args(argv))
    if len(args.amps) > 1:
        p.error(f'kernel_floor takes one --amp, got {" ".join(args.amps)}')
    return args


def main(argv=None, relaunch: bool = False):
    args = parse_args(argv)
    if relaunch:
        measure.relaunch_with_wait_policy(args, osp.abspath(__file__), argv)
    measure.setup(args)
    names = list(args.models)
    if args.baseline not in names:
        names.append(args.baseline)
    args.models = names
    targets = measure.build_targets(args)
    base = measure.baseline_target(targets, args)
    print(measure.header(args))
    rates = machine_rates(args)
    print(f'this machine, {gemm_dtype(args)}: a {RATE_GEMM}^3 GEMM runs at '
          f'{rates["gemm"]:.0f} G multiply-adds/s, an 11x11 depthwise '
          f'convolution of {"x".join(map(str, RATE_DEPTHWISE))} at '
          f'{rates["depthwise"]:.1f} G/s')
    results = {}
    for t in targets:
        if t is base:
            continue
        for m in args.modes:
            res = measure_floor(t, base, m, args)
            if res is None:
                print(f'{t.name}: no fast-path kernels recorded (not FCViT, '
                      'or on its plain path): skipped')
                break
            results[(t.name, m)] = res
    rows = report(results, base.name)
    for r in rows:
        r.update(machine_gemm_gmacs=rates['gemm'],
                 machine_depthwise_gmacs=rates['depthwise'])
    measure.save_rows(args, rows)
    return rows


if __name__ == '__main__':
    main(relaunch=True)
