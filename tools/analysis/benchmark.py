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
  channels-last by hand, as a user could do: ``fcvit-b12-plain-cl`` is the
  reference transcription run channels-last); ``resnet50``, ``convnext-t``,
  ``poolformer-s12`` (mmpretrain backbones as shipped). Each gets a global
  average pool and a 1000-class linear head, unless ``--backbone-only``
  (then the loss is the sum of the means of the backbone's outputs);
* whole configs (``--configs``; ``pkg::path`` for the libraries' own, e.g.
  ``mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py``; a ``@plain`` suffix
  puts FCViT backbones on their plain path): one iteration on a
  synthetic batch (random images and annotations of the right kind for
  mmdet / mmseg / mmpretrain), training = data preprocessor + loss +
  backward, inference = ``predict``.

A training step is forward + loss + backward (no optimizer update).

Kernel floor (``--floor``, FCViT models on the fast path): the model's own
1x1 products (MKL GEMMs, with their backward products in training) and
depthwise convolutions (with their GELU, forward and backward in training)
are recorded with their exact shapes during one step and then timed alone:
each distinct shape run a few times in a row on the same tensors (GEMM
outputs preallocated), the best time kept, times the number of calls; the
repetitions alternate with steps of the baseline model. Their sum is a lower
bound of the step time with these kernels, whatever is done to the rest of
the model (stem, norms, global context, copies, allocation); the table
prints it with the throughput ratio to the baseline that this bound would
give, i.e. the best ratio reachable without faster GEMM/depthwise kernels.

OpenMP wait policy (``--omp-wait-policy``, CPU): by default the benchmark
re-launches itself with ``OMP_WAIT_POLICY=PASSIVE`` (unless the variable is
already set), so that idle OpenMP threads sleep instead of spinning. On a
machine shared with other jobs, spinning threads turn every parallel
region's barrier into a wait for the scheduler, and the measurement then
reflects the number of operator calls more than the work (2-thread steps
can then be several times slower than 1-thread ones, the more so the more
operators a model has). ``--omp-wait-policy inherit`` keeps the environment
as it is; the header line says which policy was in force.

Peak memory (``--memory``): on CUDA, ``torch.cuda.max_memory_allocated``
minus what was allocated before the step. On CPU (Linux), the growth of the
process's resident set during the step: glibc's mmap threshold is pinned at
1 MiB (``mallopt``) so that every tensor from 1 MiB on is returned to the OS
as soon as it is freed (otherwise freed heap memory stays resident and the
peak over-counts), free heap memory is returned first (``malloc_trim``), the
high-water mark is reset through ``/proc/self/clear_refs`` and read back
from ``VmHWM``. By default each model and mode is measured in a fresh
process (one warm-up step, then the measured one), since an allocator that
already served the timed steps keeps freed blocks resident and the pinned
threshold would change the timings; ``--memory-in process`` measures in the
benchmark's own process after the timings instead.

Examples::

    # the issue's CPU comparison (2 threads, batch 8, 224 x 224)
    python tools/analysis/benchmark.py --models fcvit-b12 resnet50 \\
        convnext-t poolformer-s12
    # the same with the issue's hand-made channels-last reference point and
    # the kernel floor (how fast FCViT could be with these GEMM/depthwise
    # kernels if nothing else took any time)
    python tools/analysis/benchmark.py --models fcvit-b12 \\
        fcvit-b12-plain-cl resnet50 --floor
    # dense setting: backbones at 512 x 512, memory with and without with_cp
    python tools/analysis/benchmark.py --models fcvit-b12 fcvit-b12-cp \\
        --backbone-only --batch 2 --size 512 --mode train --memory
    # GPU, AMP and channels-last peers
    python tools/analysis/benchmark.py --device cuda --amp bf16 \\
        --channels-last --batch 64
    # detectors, one iteration each
    python tools/analysis/benchmark.py --configs \\
        configs/detection/maskrcnn_fcvit_b12.py \\
        mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py \\
        --batch 2 --size 800 1333 --mode train
"""
import argparse
import ctypes
import functools
import gc
import json
import os
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

PEERS = ('resnet50', 'convnext-t', 'poolformer-s12')
FCVIT_ARCHS = ('tiny', 'b12', 'b24', 'b48')


# ---------------------------------------------------------------------- #
# models
# ---------------------------------------------------------------------- #
class Classifier(nn.Module):
    """Backbone + global average pool + linear head (or the backbone alone,
    whose outputs' means are summed into a scalar loss)."""

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


def _fcvit_arch_flags(name: str):
    """``'fcvit-b12-plain-cl'`` -> ``('b12', {'plain', 'cl'})``."""
    parts = name.split('-')[1:]
    return parts[0], set(parts[1:])


def build_backbone(name: str) -> nn.Module:
    """A backbone by benchmark name (see the module docstring)."""
    if name.startswith('fcvit-'):
        from fcvit_mm.models import FCViT
        arch, flags = _fcvit_arch_flags(name)
        unknown = flags - {'plain', 'cp', 'cl'}
        if arch not in FCVIT_ARCHS or unknown:
            raise ValueError(
                f'unknown FCViT model {name!r}: use '
                'fcvit-ARCH[-plain][-cp][-cl] '
                f'with ARCH in {FCVIT_ARCHS}')
        model = FCViT(arch=arch, with_cp='cp' in flags)
        model.fast_path = 'plain' not in flags
        return model
    if name in PEERS:
        from mmpretrain.models import ConvNeXt, PoolFormer, ResNet
        if name == 'resnet50':
            return ResNet(depth=50)
        if name == 'convnext-t':
            return ConvNeXt(arch='tiny')
        return PoolFormer(arch='s12')
    raise ValueError(
        f'unknown model {name!r}; valid: fcvit-ARCH[-plain][-cp][-cl] '
        'with ARCH '
        f'in {FCVIT_ARCHS}, or one of {PEERS}')


def _channels_last(name: str, args) -> bool:
    """Whether a named model runs channels-last: peers with
    ``--channels-last``, FCViT models with the ``-cl`` suffix."""
    if name.startswith('fcvit-'):
        return 'cl' in _fcvit_arch_flags(name)[1]
    return args.channels_last


class ImageTarget:
    """A named image model with its synthetic batch."""

    def __init__(self, name: str, args):
        self.name = self.spec = name
        self.model = Classifier(build_backbone(name),
                                backbone_only=args.backbone_only)
        self.model.to(args.device)
        self.channels_last = _channels_last(name, args)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        H, W = args.size
        self.x = torch.randn(args.batch, 3, H, W, device=args.device)
        if self.channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 1000, (args.batch, ), device=args.device)
        self.params = sum(p.numel() for p in self.model.backbone.parameters())
        self.images = args.batch

    def infer(self):
        self.model.eval()
        with torch.no_grad():
            self.model(self.x)

    def train(self):
        self.model.train()
        self.model.loss(self.x, self.y).backward()
        self.model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------- #
# whole configs
# ---------------------------------------------------------------------- #
def resolve_config_path(path: str) -> str:
    """``pkg::rel/path.py`` -> the file shipped in ``pkg``'s ``.mim``."""
    if '::' in path:
        pkg, rel = path.split('::', 1)
        from mmengine.utils import get_installed_path
        try:
            root = get_installed_path(pkg)
        except Exception as e:  # noqa: BLE001
            raise FileNotFoundError(
                f'config {path!r}: package {pkg!r} is not installed') from e
        path = osp.join(root, '.mim', 'configs', rel)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path!r}')
    return path


def _num_classes(cfg_model, default):
    for key in ('num_classes', ):
        if key in cfg_model:
            return cfg_model[key]
    for sub in ('roi_head', 'bbox_head', 'decode_head', 'head'):
        node = cfg_model.get(sub)
        if isinstance(node, dict):
            found = _num_classes(node, None)
            if found is not None:
                return found
        if isinstance(node, (list, tuple)) and node:
            found = _num_classes(node[0], None)
            if found is not None:
                return found
    return default


def synthetic_batch(scope: str, cfg_model, batch: int, size, device):
    """Random images and annotations in the library's data format."""
    H, W = size
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, H, W), dtype=torch.uint8,
                            generator=g) for _ in range(batch)]
    ncls = _num_classes(cfg_model, 10)
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        with_mask = 'mask_head' in str(cfg_model)
        packed = demo_mm_inputs(batch, image_shapes=[(3, H, W)] * batch,
                                num_items=[4] * batch, num_classes=ncls,
                                with_mask=with_mask)
        packed['inputs'] = images
        return packed
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        samples = []
        for _ in range(batch):
            s = SegDataSample(metainfo=dict(img_shape=(H, W),
                                            ori_shape=(H, W),
                                            pad_shape=(H, W)))
            s.gt_sem_seg = PixelData(
                data=torch.randint(0, ncls, (1, H, W), generator=g))
            samples.append(s)
        return dict(inputs=images, data_samples=samples)
    if scope == 'mmpretrain':
        from mmpretrain.structures import DataSample
        samples = [DataSample(metainfo=dict(img_shape=(H, W))).set_gt_label(
            int(torch.randint(0, ncls, (1, ), generator=g)))
            for _ in range(batch)]
        return dict(inputs=images, data_samples=samples)
    raise ValueError(f'config default_scope {scope!r} is not supported: '
                     'use an mmdet, mmseg or mmpretrain config')


def build_model_from_config(path: str):
    """(model, cfg, scope) for a config, as the libraries' runners build it
    (top-level ``data_preprocessor`` merged in), without pretrained
    weights."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(resolve_config_path(path))
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg', 'mmpretrain'):
        raise ValueError(f'config {path!r}: default_scope {scope!r} is not '
                         'mmdet, mmseg or mmpretrain')
    init_default_scope(scope)
    if scope == 'mmdet':
        import mmdet.models  # noqa: F401
    elif scope == 'mmseg':
        import mmseg.models  # noqa: F401
    else:
        import mmpretrain.models  # noqa: F401
    model_cfg = cfg.model
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None  # no pretrained weights
    return MODELS.build(model_cfg), cfg, scope


class ConfigTarget:
    """One iteration of a whole model built from a config."""

    def __init__(self, path: str, args):
        self.spec = path
        plain = path.endswith('@plain')
        if plain:
            path = path[:-len('@plain')]
        self.name = osp.splitext(osp.basename(path.split('::')[-1]))[0]
        model, cfg, scope = build_model_from_config(path)
        if plain:  # FCViT backbones on their op-by-op path
            self.name += '@plain'
            for m in model.modules():
                if isinstance(getattr(m, 'fast_path', None), bool):
                    m.fast_path = False
        self.model = model.to(args.device)
        self.batch = synthetic_batch(scope, cfg.model, args.batch, args.size,
                                     args.device)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.images = args.batch
        self.channels_last = False

    def infer(self):
        self.model.eval()
        with torch.no_grad():
            data = self.model.data_preprocessor(self.batch, False)
            self.model(**data, mode='predict')

    def train(self):
        self.model.train()
        data = self.model.data_preprocessor(self.batch, True)
        losses = self.model(**data, mode='loss')
        loss, _ = self.model.parse_losses(losses)
        loss.backward()
        self.model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------- #
# measuring
# ---------------------------------------------------------------------- #
def _sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _status_bytes(key: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
#: pin glibc's mmap threshold for CPU memory measurements (see the doc)
PIN_MMAP_THRESHOLD = True


def _malloc_trim(pin_mmap_threshold: bool = True):
    try:
        libc = ctypes.CDLL('libc.so.6')
        if pin_mmap_threshold:
            libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn: Callable, device: str) -> Optional[int]:
    """Peak extra memory (bytes) used by ``fn()``; None if not measurable."""
    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    _malloc_trim(PIN_MMAP_THRESHOLD)
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM to the current RSS
    except OSError:
        return None
    base = _status_bytes('VmRSS')
    fn()
    peak = _status_bytes('VmHWM')
    if base is None or peak is None:
        return None
    return max(0, peak - base)


def autocast_ctx(args):
    if args.amp == 'none':
        return torch.autocast(args.device.split(':')[0], enabled=False)
    dtype = dict(fp16=torch.float16, bf16=torch.bfloat16)[args.amp]
    return torch.autocast(args.device.split(':')[0], dtype=dtype)


def run_step(target, mode: str, args):
    """One inference or training step of ``target`` (under ``--amp``)."""
    with autocast_ctx(args):
        getattr(target, 'infer' if mode == 'inference' else 'train')()


def baseline_target(targets, args):
    """The ``--baseline`` target, else the first one."""
    return next((t for t in targets if t.name == args.baseline), targets[0])


def measure(targets, modes: List[str], args) -> Dict:
    """Interleaved timing: per repetition, every target and mode once."""
    times = {(t.name, m): [] for t in targets for m in modes}
    run = functools.partial(run_step, args=args)
    for t in targets:
        for m in modes:
            for _ in range(args.warmup):
                run(t, m)
    for _ in range(args.reps):
        for t in targets:
            for m in modes:
                _sync(args.device)
                start = time.perf_counter()
                run(t, m)
                _sync(args.device)
                times[(t.name, m)].append(time.perf_counter() - start)
    memory = {}
    if args.memory:
        for t in targets:
            for m in modes:
                if args.memory_in == 'subprocess':
                    memory[(t.name, m)] = _memory_in_subprocess(t.spec, m,
                                                                args)
                else:
                    memory[(t.name, m)] = peak_memory(lambda: run(t, m),
                                                      args.device)
    floor = measure_floor(targets, modes, args) if args.floor else {}
    return dict(times=times, memory=memory, floor=floor)


def _memory_in_subprocess(spec: str, mode: str, args) -> Optional[int]:
    """Peak memory of one target and mode, measured by a fresh process
    (an allocator that has not been used yet measures cleanly)."""
    import subprocess
    cmd = [sys.executable, osp.abspath(__file__),
           '--configs' if args.configs else '--models', spec,
           '--mode', mode, '--device', args.device, '--amp', args.amp,
           '--batch', str(args.batch), '--size', *map(str, args.size),
           '--threads', str(args.threads), '--seed', str(args.seed),
           '--omp-wait-policy', 'inherit', '--memory-only']
    if args.channels_last:
        cmd.append('--channels-last')
    if args.backbone_only:
        cmd.append('--backbone-only')
    res = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(res.stdout.strip().splitlines()):
        if line.startswith('{'):
            return json.loads(line)['peak']
    raise RuntimeError(f'memory measurement of {spec} ({mode}) failed:\n'
                       f'{res.stderr[-2000:]}')


def _memory_only(target, mode: str, args):
    """The ``--memory-only`` child: one warm-up step, then the peak."""
    def run():
        run_step(target, mode, args)

    run()
    print(json.dumps(dict(peak=peak_memory(run, args.device))))


# ---------------------------------------------------------------------- #
# kernel floor
# ---------------------------------------------------------------------- #
def record_kernels(target, mode: str, args):
    """The fast path's 1x1 products ``(M, K, N)`` and depthwise calls
    ``(input shape, conv, gelu)`` during one step of ``target``."""
    from fcvit_mm.models.backbones import _fast
    gemms, dws = [], []
    linear, depthwise_conv = _fast.linear, _fast.depthwise_conv

    def rec_linear(x, weight, bias, gelu=False, residual=None):
        gemms.append((x.numel() // x.shape[-1], weight.shape[1],
                      weight.shape[0]))
        return linear(x, weight, bias, gelu, residual)

    def rec_depthwise(x, conv, gelu=False):
        dws.append((tuple(x.shape), conv, gelu))
        return depthwise_conv(x, conv, gelu)

    _fast.linear, _fast.depthwise_conv = rec_linear, rec_depthwise
    try:
        run_step(target, mode, args)
    finally:
        _fast.linear, _fast.depthwise_conv = linear, depthwise_conv
    return gemms, dws


def floor_kernels(target, mode: str, args) -> Optional[List[tuple]]:
    """``(kind, fn, count)`` for each distinct GEMM / depthwise call of one
    step of an FCViT ``target`` on the fast path (``fn`` runs it once on
    fresh tensors of its shape); None for other models."""
    from collections import Counter
    from fcvit_mm.models.backbones import _fast
    if not isinstance(target, ImageTarget):
        return None
    gemms, dws = record_kernels(target, mode, args)
    if not gemms:
        return None  # not on the fast path
    train = mode == 'train'
    dev = args.device
    jobs = []
    for (M, K, N), count in Counter(gemms).items():
        x = torch.randn(M, K, device=dev)
        w = torch.randn(N, K, device=dev)
        b = torch.randn(N, device=dev)
        g = torch.randn(M, N, device=dev)
        # outputs preallocated: the floor leaves allocation out
        y, gx, gw = x.new_empty(M, N), x.new_empty(M, K), x.new_empty(K, N)

        def products(x=x, w=w, b=b, g=g, y=y, gx=gx, gw=gw):
            with torch.no_grad():
                torch.addmm(b, x, w.t(), out=y)
                if train:  # input and weight gradients
                    torch.mm(g, w, out=gx)
                    torch.mm(x.t(), g, out=gw)

        jobs.append(('gemm', products, count))
    for (shape, conv, gelu), count in Counter(dws).items():
        x = torch.randn(shape, device=dev).contiguous(
            memory_format=torch.channels_last).requires_grad_(train)
        g = torch.randn(shape, device=dev).contiguous(
            memory_format=torch.channels_last)

        def depthwise(x=x, g=g, conv=conv, gelu=gelu):
            with torch.set_grad_enabled(train), autocast_ctx(args):
                y = _fast.depthwise_conv(x, conv, gelu)
            if train:
                y.backward(g)
                x.grad = None
                conv.zero_grad(set_to_none=True)

        jobs.append(('depthwise', depthwise, count))
    return jobs


#: consecutive runs of each kernel per repetition of the floor (best kept)
FLOOR_TRIES = 3


def measure_floor(targets, modes, args) -> Dict:
    """Kernel floors, each repetition next to a step of the baseline model
    (so that the ratio holds when the machine's speed drifts)."""
    base = baseline_target(targets, args)
    out = {}
    for t in targets:
        for m in modes:
            jobs = floor_kernels(t, m, args)
            if jobs is None:
                continue
            for _, fn, _ in jobs:
                fn()  # warm-up
            base_ts, sums = [], []
            for _ in range(args.reps):
                _sync(args.device)
                start = time.perf_counter()
                run_step(base, m, args)
                _sync(args.device)
                base_ts.append(time.perf_counter() - start)
                acc = dict(gemm=0., depthwise=0.)
                for kind, fn, count in jobs:
                    best = float('inf')
                    for _ in range(FLOOR_TRIES):  # warm: the best of a few
                        _sync(args.device)
                        start = time.perf_counter()
                        fn()
                        _sync(args.device)
                        best = min(best, time.perf_counter() - start)
                    acc[kind] += count * best
                sums.append(acc)
            totals = [a['gemm'] + a['depthwise'] for a in sums]
            i = totals.index(statistics.median_low(totals))
            out[(t.name, m)] = dict(
                gemm=sums[i]['gemm'], depthwise=sums[i]['depthwise'],
                total=totals[i], baseline=statistics.median(base_ts))
    return out


def report_floor(targets, result, rows, args):
    floors = result.get('floor', {})
    if not floors:
        return
    baseline = baseline_target(targets, args).name
    print('\nkernel floor: the 1x1 GEMMs and depthwise convolutions (+GELU) '
          'of the step, timed alone with their exact shapes (warm, nothing '
          'else), median of the repetitions; "best" = throughput ratio to '
          f'{baseline} (timed next to it) if the step took only that long')
    header = (f'{"model":<24} {"mode":<10} {"GEMMs ms":>9} '
              f'{"dw ms":>8} {"floor ms":>9} {"step ms":>9} '
              f'{baseline + " ms":>14} {"best x " + baseline:>16}')
    print(header)
    print('-' * len(header))
    by = {(r['model'], r['mode']): r for r in rows}
    for (name, m), fl in floors.items():
        r = by[(name, m)]
        best = fl['baseline'] / fl['total']
        r.update(floor_ms=fl['total'] * 1e3, floor_gemm_ms=fl['gemm'] * 1e3,
                 floor_depthwise_ms=fl['depthwise'] * 1e3, floor_ratio=best)
        print(f'{name:<24} {m:<10} {fl["gemm"] * 1e3:9.1f} '
              f'{fl["depthwise"] * 1e3:8.1f} {fl["total"] * 1e3:9.1f} '
              f'{r["ms_per_step"]:9.1f} {fl["baseline"] * 1e3:14.1f} '
              f'{best:16.2f}')


def report(targets, modes, result, args) -> List[dict]:
    rows = []
    names = [t.name for t in targets]
    baseline = baseline_target(targets, args).name
    for m in modes:
        base_t = statistics.median(result['times'][(baseline, m)])
        for t in targets:
            ts = result['times'][(t.name, m)]
            med = statistics.median(ts)
            mem = result['memory'].get((t.name, m))
            rows.append(dict(
                model=t.name, mode=m, params_m=t.params / 1e6,
                batch=t.images, ms_per_step=med * 1e3,
                ms_min=min(ts) * 1e3, ms_max=max(ts) * 1e3,
                images_per_s=t.images / med, ratio=base_t / med,
                peak_mem_mb=None if mem is None else mem / 2**20,
                channels_last=t.channels_last))
    w = max([34] + [len(n) + 1 for n in names])
    header = (f'{"model":<{w}} {"mode":<10} {"params":>8} {"ms/step":>9} '
              f'{"(min-max)":>17} {"img/s":>8} {"x " + baseline:>14}')
    if args.memory:
        header += f' {"peak MiB":>9}'
    print(header)
    print('-' * len(header))
    for r in rows:
        line = (f'{r["model"]:<{w}} {r["mode"]:<10} {r["params_m"]:7.2f}M '
                f'{r["ms_per_step"]:9.1f} '
                f'{"(%.0f-%.0f)" % (r["ms_min"], r["ms_max"]):>17} '
                f'{r["images_per_s"]:8.2f} {r["ratio"]:14.2f}')
        if args.memory:
            mem = r['peak_mem_mb']
            line += f' {"n/a" if mem is None else "%.0f" % mem:>9}'
        print(line)
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Throughput / peak memory of FCViT and peers, one run',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--models', nargs='+',
                   default=['fcvit-b12', 'resnet50', 'convnext-t',
                            'poolformer-s12'],
                   help='fcvit-ARCH[-plain][-cp][-cl], resnet50, convnext-t, '
                   'poolformer-s12')
    p.add_argument('--configs', nargs='+', default=[],
                   help='whole configs to measure instead of --models '
                   '(pkg::path for configs shipped by mmdet/mmseg/...)')
    p.add_argument('--mode', choices=['inference', 'train', 'both'],
                   default='both')
    p.add_argument('--device', default='cpu')
    p.add_argument('--amp', choices=['none', 'fp16', 'bf16'], default='none',
                   help='autocast dtype')
    p.add_argument('--channels-last', action='store_true',
                   help='run the peer models channels-last (FCViT always '
                   'is, internally)')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, nargs='+', default=[224],
                   help='H [W]')
    p.add_argument('--threads', type=int, default=2,
                   help='torch CPU threads (default 2)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--baseline', default='resnet50',
                   help='model whose throughput is 1.00 (default resnet50, '
                   'else the first one)')
    p.add_argument('--backbone-only', action='store_true',
                   help='no pooling / head: loss = sum of output means')
    p.add_argument('--memory', action='store_true',
                   help='also measure peak memory (separate, untimed step)')
    p.add_argument('--floor', action='store_true',
                   help='also time the FCViT models\' GEMMs and depthwise '
                   'convolutions alone (a lower bound of their step time)')
    p.add_argument('--omp-wait-policy', default='passive',
                   choices=['passive', 'active', 'inherit'],
                   help='OMP_WAIT_POLICY for the run (re-launches the '
                   'script when it differs); default passive')
    p.add_argument('--memory-in', choices=['subprocess', 'process'],
                   default='subprocess',
                   help='measure peak memory in a fresh process per model '
                   'and mode (default; clean allocator) or in this one')
    p.add_argument('--memory-only', action='store_true',
                   help=argparse.SUPPRESS)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', help='write the table rows to this file')
    args = p.parse_args(argv)
    if len(args.size) == 1:
        args.size = [args.size[0]] * 2
    if len(args.size) != 2 or min(args.size) < 32:
        p.error(f'--size takes H [W] (at least 32), got {args.size}')
    if args.batch < 1 or args.reps < 1 or args.warmup < 0:
        p.error('--batch and --reps must be >= 1, --warmup >= 0')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error('--device cuda requested but CUDA is not available')
    if args.amp == 'fp16' and args.device == 'cpu':
        p.error('--amp fp16 is for CUDA; use --amp bf16 on CPU')
    return args


def _relaunch_with_wait_policy(args, argv) -> bool:
    """Re-run this script with the requested OMP_WAIT_POLICY (it is read
    when the OpenMP runtime starts, so it cannot change in-process)."""
    if args.omp_wait_policy == 'inherit' or args.device != 'cpu':
        return False
    want = args.omp_wait_policy.upper()
    if os.environ.get('OMP_WAIT_POLICY', '').upper() == want:
        return False
    if os.environ.get('_FCVIT_BENCH_RELAUNCHED'):
        return False  # never loop
    env = dict(os.environ, OMP_WAIT_POLICY=want, _FCVIT_BENCH_RELAUNCHED='1')
    import subprocess
    cmd = [sys.executable, osp.abspath(__file__)] + list(
        sys.argv[1:] if argv is None else argv)
    raise SystemExit(subprocess.call(cmd, env=env))


def main(argv=None, relaunch: bool = False):
    args = parse_args(argv)
    if args.memory_only:
        _malloc_trim(PIN_MMAP_THRESHOLD)  # before anything is allocated
    elif relaunch:
        _relaunch_with_wait_policy(args, argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import fcvit_mm  # noqa: F401  (registers FCViT)
    if args.configs:
        targets = [ConfigTarget(c, args) for c in args.configs]
    else:
        targets = [ImageTarget(n, args) for n in args.models]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f'targets must have distinct names, got {names}')
    modes = ['inference', 'train'] if args.mode == 'both' else [args.mode]
    if args.memory_only:
        return _memory_only(targets[0], modes[0], args)
    dev = args.device
    if dev == 'cpu':
        dev += f' ({torch.get_num_threads()} threads)'
    else:
        dev += f' ({torch.cuda.get_device_name(args.device)})'
    print(f'device {dev}, batch {args.batch}, size {args.size[0]}x'
          f'{args.size[1]}, amp {args.amp}, warm-up {args.warmup}, '
          f'median of {args.reps} interleaved repetitions, torch '
          f'{torch.__version__}, OMP_WAIT_POLICY='
          f'{os.environ.get("OMP_WAIT_POLICY", "(unset)")}')
    result = measure(targets, modes, args)
    rows = report(targets, modes, result, args)
    report_floor(targets, result, rows, args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=1)
    return rows


if __name__ == '__main__':
    main(relaunch=True)
