# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Benchmark targets, interleaved timing, peak memory, and the options that
the measuring tools (``tools/analysis/benchmark.py``,
``tools/analysis/kernel_floor.py``) share.

Timing: every target and mode is warmed up, then each repetition runs every
target and mode once (interleaved), so that ratios hold when the machine's
speed drifts; tools report medians. A training step is forward + loss +
backward (no optimizer update).

Peak memory (:func:`peak_memory`): on CUDA, ``max_memory_allocated`` minus
what was allocated before. On CPU (Linux), the growth of the process's
resident set: glibc's mmap threshold is pinned at 1 MiB (``mallopt``, if
:data:`PIN_MMAP_THRESHOLD`) so that freed tensors from 1 MiB on leave the
resident set at once, free heap memory is returned first
(``malloc_trim``), the high-water mark is reset through
``/proc/self/clear_refs`` and read back from ``VmHWM``.
"""
import argparse
import ctypes
import functools
import gc
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from .data import synthetic_batch
from .models import (Classifier, build_backbone, build_model_from_config,
                     parse_fcvit_name, use_plain_path)

#: pin glibc's mmap threshold for CPU memory measurements (see the doc)
PIN_MMAP_THRESHOLD = True
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


# ---------------------------------------------------------------------- #
# targets
# ---------------------------------------------------------------------- #
class ImageTarget:
    """A named image model (:func:`~.models.build_backbone` in a
    :class:`~.models.Classifier`) with its random batch. FCViT names with
    ``-cl``, peers with a ``-cl`` suffix or ``--channels-last`` get model
    and input converted to channels-last by hand. With ``args.compile``
    (``False``, or the keyword arguments of ``torch.compile``), the forward
    (inference) and forward + loss (training) are compiled; the backward
    is then the compiled graph's own."""

    def __init__(self, name: str, args):
        self.name = self.spec = name
        base = name
        if name.startswith('fcvit-'):
            self.channels_last = 'cl' in parse_fcvit_name(name)[1]
        else:
            if name.endswith('-cl'):
                base = name[:-len('-cl')]
            self.channels_last = args.channels_last or base != name
        self.model = Classifier(build_backbone(base),
                                backbone_only=args.backbone_only)
        self.model.to(args.device)
        #: the backbone's ``kernels`` on the device (FCViT only)
        self.kernels = getattr(self.model.backbone, 'kernels', None)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        H, W = args.size
        self.x = torch.randn(args.batch, 3, H, W, device=args.device)
        if self.channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 1000, (args.batch, ), device=args.device)
        self.params = sum(p.numel() for p in self.model.backbone.parameters())
        self.images = args.batch
        compile_kwargs = getattr(args, 'compile', False)
        self.compiled = compile_kwargs is not False
        self._forward, self._loss = self.model, self.model.loss
        if self.compiled:
            kwargs = {} if compile_kwargs is True else dict(compile_kwargs)
            self._forward = torch.compile(self.model, **kwargs)
            self._loss = torch.compile(self.model.loss, **kwargs)

    def infer(self):
        self.model.eval()
        with torch.no_grad():
            self._forward(self.x)

    def train(self):
        self.model.train()
        self._loss(self.x, self.y).backward()
        self.model.zero_grad(set_to_none=True)


class ConfigTarget:
    """One iteration of a whole model built from a config on a synthetic
    batch; a ``@plain`` suffix puts FCViT on its plain path;
    ``args.cfg_options`` (if any) is applied to the config."""

    def __init__(self, path: str, args):
        self.spec = path
        plain = path.endswith('@plain')
        if plain:
            path = path[:-len('@plain')]
        self.name = osp.splitext(osp.basename(path.split('::')[-1]))[0]
        model, cfg, scope = build_model_from_config(
            path, getattr(args, 'cfg_options', None))
        if plain:
            self.name += '@plain'
            use_plain_path(model)
        self.model = model.to(args.device)
        self.batch = synthetic_batch(scope, cfg.model, args.batch, args.size)
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


def precisions(args) -> List[str]:
    """The precisions to time: ``args.amps`` (set by
    :func:`check_measure_args` from ``--amp``), else ``[args.amp]`` (a
    namespace built by hand, e.g. the GPU check's)."""
    return getattr(args, 'amps', None) or [args.amp]


def build_targets(args) -> list:
    """The targets of ``--configs`` or else ``--models``, distinct names."""
    import fcvit_mm  # noqa: F401  (registers FCViT)
    if getattr(args, 'configs', None):
        targets = [ConfigTarget(c, args) for c in args.configs]
    else:
        targets = [ImageTarget(n, args) for n in args.models]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f'targets must have distinct names, got {names}')
    if 'bf16' in precisions(args) and args.device == 'cpu':
        # what --amp's AmpOptimWrapper does for a CPU training run
        from fcvit_mm.engine.mixed_precision import (guard_strided_convs,
                                                      install_float32_islands)
        install_float32_islands()
        for t in targets:
            guard_strided_convs(t.model)
    return targets


def baseline_target(targets, args):
    """The ``--baseline`` target, else the first one."""
    return next((t for t in targets if t.name == args.baseline), targets[0])


# ---------------------------------------------------------------------- #
# timing
# ---------------------------------------------------------------------- #
def sync(device: str):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def autocast_ctx(args, amp: Optional[str] = None):
    """``torch.autocast`` for the precision ``amp`` (default ``args.amp``;
    disabled for ``none``)."""
    amp = amp or args.amp
    if amp == 'none':
        return torch.autocast(args.device.split(':')[0], enabled=False)
    dtype = dict(fp16=torch.float16, bf16=torch.bfloat16)[amp]
    return torch.autocast(args.device.split(':')[0], dtype=dtype)


def run_step(target, mode: str, args, amp: Optional[str] = None):
    """One inference or training step of ``target`` under the precision
    ``amp`` (default ``args.amp``)."""
    with autocast_ctx(args, amp):
        getattr(target, 'infer' if mode == 'inference' else 'train')()


def timed(fn: Callable, device: str) -> float:
    """Seconds that ``fn()`` takes (device synchronised)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(fns: Dict[Any, Callable], warmup: int, reps: int,
                device: str = 'cpu') -> Dict[Any, List[float]]:
    """``{key: [seconds per repetition]}`` of each ``fns[key]()``:
    ``warmup`` calls of each, then ``reps`` repetitions in which every
    function runs once in turn (so that a change of the machine's speed
    touches all of them alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[Any, List[float]] = {key: [] for key in fns}
    for _ in range(reps):
        for key, fn in fns.items():
            times[key].append(timed(fn, device))
    return times


def time_steps(targets, modes: List[str],
               args) -> Dict[tuple, List[float]]:
    """``{(name, mode, amp): [seconds per repetition]}`` for every target,
    mode and precision of ``--amp``: ``--warmup`` steps of each, then
    ``--reps`` interleaved repetitions."""
    fns = {(t.name, m, a): functools.partial(run_step, t, m, args, a)
           for t in targets for m in modes for a in precisions(args)}
    return interleaved(fns, args.warmup, args.reps, args.device)


# ---------------------------------------------------------------------- #
# memory
# ---------------------------------------------------------------------- #
def _status_bytes(key: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def malloc_trim(pin_mmap_threshold: bool = True):
    """Return free heap memory to the OS (glibc), pinning the mmap threshold
    at 1 MiB first if asked; a no-op elsewhere."""
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
    malloc_trim(PIN_MMAP_THRESHOLD)
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


# ---------------------------------------------------------------------- #
# command line
# ---------------------------------------------------------------------- #
OMP_NOTE = """\
OpenMP wait policy (``--omp-wait-policy``, CPU): by default the tool
re-launches itself with ``OMP_WAIT_POLICY=PASSIVE`` (unless the variable is
already set), so that idle OpenMP threads sleep instead of spinning. On a
machine shared with other jobs, spinning threads turn every parallel
region's barrier into a wait for the scheduler, and the measurement then
reflects the number of operator calls more than the work. ``inherit`` keeps
the environment as it is; the header line says which policy was in force.
"""


def measure_parser(description: str, doc: str, models: List[str],
                   models_help: str) -> argparse.ArgumentParser:
    """A measuring tool's parser with the shared options (models, mode,
    device, amp, batch, size, threads, repetitions, baseline, ...);
    ``doc`` (the tool's module doc) is the help's epilog."""
    p = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc + '\n' + OMP_NOTE)
    p.add_argument('--models', nargs='+', default=models, help=models_help)
    p.add_argument('--mode', choices=['inference', 'train', 'both'],
                   default='both')
    p.add_argument('--device', default='cpu')
    p.add_argument('--amp', choices=['none', 'fp16', 'bf16'], nargs='+',
                   default=['none'],
                   help='autocast dtype; several (e.g. none bf16) are timed '
                   'interleaved in one run')
    p.add_argument('--channels-last', action='store_true',
                   help='run the peer models channels-last (FCViT always '
                   'is, internally, on its fast path)')
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
    p.add_argument('--omp-wait-policy', default='passive',
                   choices=['passive', 'active', 'inherit'],
                   help='OMP_WAIT_POLICY for the run (re-launches the '
                   'tool when it differs); default passive')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', help='write the table rows to this file')
    return p


def check_measure_args(p: argparse.ArgumentParser, args):
    """Normalise ``--size`` and reject impossible values (``p.error``)."""
    if len(args.size) == 1:
        args.size = [args.size[0]] * 2
    if len(args.size) != 2 or min(args.size) < 32:
        p.error(f'--size takes H [W] (at least 32), got {args.size}')
    if args.batch < 1 or args.reps < 1 or args.warmup < 0:
        p.error('--batch and --reps must be >= 1, --warmup >= 0')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error('--device cuda requested but CUDA is not available')
    #: the precisions to time (``--amp``, in order, once each); ``amp``:
    #: the first, for what takes one
    args.amps = list(dict.fromkeys(args.amp))
    args.amp = args.amps[0]
    if 'fp16' in args.amps and args.device == 'cpu':
        p.error('--amp fp16 is for CUDA; use --amp bf16 on CPU')
    args.modes = (['inference', 'train'] if args.mode == 'both' else
                  [args.mode])
    return args


def relaunch_with_wait_policy(args, script: str, argv=None):
    """Re-run ``script`` with the requested ``OMP_WAIT_POLICY`` (read when
    the OpenMP runtime starts, so it cannot change in-process) and exit
    with its status; returns when nothing needs to change."""
    if args.omp_wait_policy == 'inherit' or args.device != 'cpu':
        return
    want = args.omp_wait_policy.upper()
    if os.environ.get('OMP_WAIT_POLICY', '').upper() == want:
        return
    if os.environ.get('_FCVIT_BENCH_RELAUNCHED'):
        return  # never loop
    env = dict(os.environ, OMP_WAIT_POLICY=want, _FCVIT_BENCH_RELAUNCHED='1')
    cmd = [sys.executable, script] + list(
        sys.argv[1:] if argv is None else argv)
    raise SystemExit(subprocess.call(cmd, env=env))


def setup(args):
    """Threads and seed of the run."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def save_rows(args, rows: List[dict]):
    """Write the arguments and the table rows to ``--json`` (if given)."""
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=1)


def header(args) -> str:
    """One line describing the run's setting."""
    dev = args.device
    if dev == 'cpu':
        from fcvit_mm.utils.cpu import describe_cpu
        dev += f' ({torch.get_num_threads()} threads; {describe_cpu()})'
    else:
        dev += f' ({torch.cuda.get_device_name(args.device)})'
    return (f'device {dev}, batch {args.batch}, size {args.size[0]}x'
            f'{args.size[1]}, amp {" ".join(precisions(args))}, warm-up '
            f'{args.warmup}, '
            f'median of {args.reps} interleaved repetitions, torch '
            f'{torch.__version__}, OMP_WAIT_POLICY='
            f'{os.environ.get("OMP_WAIT_POLICY", "(unset)")}')
