# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The GPU check (``tools/analysis/gpu_check.py``): the backbone's CUDA
tests and a benchmark table of FCViT against ResNet-50 on one GPU (eager,
compiled, dense training), in one run of bounded time.

The run is a list of sections, each in its own subprocess with its own
time budget, each made of cells (one measurement, or the test run):

* ``env``: versions, the device, and which ``mmcv.ops`` is in use (mmcv's
  compiled ops, or :mod:`~tools.analysis.lib.ops_standin`);
* ``tests``: pytest on the backbone's test files, the tests whose name
  says ``cuda`` (they skip without CUDA);
* ``eager``: FCViT-tiny / B12 / B24 as users build them (the constructor's
  ``fast_path`` default: ``kernels`` ``'plain'`` on CUDA), with
  ``fast_path=True`` (``'cuda'``) and ``False``, and torchvision's
  ResNet-50 (NCHW and channels-last), inference and training step, bf16
  autocast and fp32 (TF32 off), each model built once;
* ``dense``: one training iteration of Mask R-CNN FCViT-B12 (default and
  plain path) against mmdet's Mask R-CNN R-50 (batch 2, 800 x 1333), and
  of Semantic FPN FCViT-B12 against mmseg's FPN R-50 (batch 4, 512 x
  512), under AMP (fp16, as mmdet's ``AmpOptimWrapper``);
* ``compile``: the image models under ``torch.compile`` (inductor), bf16
  only, in priority order (ResNet-50 channels-last, FCViT-B12 default,
  FCViT-B12 plain, then tiny and B24), as many as the time left allows:
  compiling is what costs (tens of seconds per model and mode), so fp32 is
  never compiled and every cell that does not fit is reported as skipped.

The sections run one after the other, in that order. A section gets the
time left minus the nominal budgets of the sections after it, so time
saved early goes to ``compile``, and a section that overruns is stopped
(its whole process group) without eating the later ones' time. Each cell
is written to the results as soon as it is done, so a stopped or crashed
section keeps what it measured; its other cells are reported with the
reason. Inside a section a failing cell (an exception, out of memory) is
recorded with its error and the next one runs; a cell is skipped when the
section's time left is less than the cell is expected to take (the
longest similar cell so far).

The table is printed last; with ``--out`` (default ``$OUT`` when set)
the results (``gpu_check.json``) and the full log (``gpu_check.log``)
are written there. ``--dry-run`` runs every section and code path on the
CPU at tiny sizes (the ops stand-in forced, ``torch.compile`` with the
``eager`` backend): ``tests/test_gpu_check.py`` runs it.
"""
import argparse
import json
import os
import os.path as osp
import signal
import statistics
import subprocess
import sys
import time
import traceback
from typing import Dict, List, Optional

#: the repository root (this file is tools/analysis/lib/gpu_check.py)
ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))

SECTIONS = ('env', 'tests', 'eager', 'dense', 'compile')
#: nominal seconds per section on the GPU machine (see the module doc)
BUDGETS = dict(env=25, tests=60, eager=95, dense=70, compile=90)
#: seconds kept for the table at the end
RESERVE = 8

RESNET = 'resnet50-tv'
EAGER_MODELS = (RESNET, RESNET + '-cl', 'fcvit-b12', 'fcvit-b12-fast',
                'fcvit-b12-plain',
                'fcvit-b12-plain-cl', 'fcvit-tiny', 'fcvit-tiny-plain',
                'fcvit-b24', 'fcvit-b24-plain')
COMPILE_MODELS = (RESNET + '-cl', 'fcvit-b12', 'fcvit-b12-plain',
                  'fcvit-tiny', 'fcvit-b24', 'fcvit-tiny-plain',
                  'fcvit-b24-plain')
DET = 'configs/detection/maskrcnn_fcvit_b12.py'
SEG = 'configs/segmentation/fpn_fcvit_b12_ade20k.py'
DENSE = (
    ('detection', (DET, DET + '@plain',
                   'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'),
     2, (800, 1333)),
    ('segmentation', (SEG, SEG + '@plain',
                      'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'),
     4, (512, 512)),
)
#: the backbone's test files, and the tests of them that need CUDA
TEST_FILES = ('tests/test_backbone.py', 'tests/test_fast_paths.py')
TEST_GLOBS = ('tests/test_*kernel*.py', 'tests/test_*triton*.py')
TEST_SELECT = 'cuda'

# the dry run: every section and code path, on the CPU, tiny
DRY_DET = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
DRY_SEG = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
DRY = dict(
    eager_models=(RESNET, RESNET + '-cl', 'fcvit-tiny', 'fcvit-tiny-plain'),
    compile_models=(RESNET + '-cl', 'fcvit-tiny'),
    dense=(('detection',
            ('configs/detection/demo_maskrcnn_fcvit_tiny_shapes.py',
             DRY_DET), 1, (64, 64)),
           ('segmentation',
            ('configs/segmentation/demo_fpn_fcvit_tiny_shapes.py',
             DRY_SEG), 1, (64, 64))),
    # the R-50 models' heads at the demo configs' sizes, no 512 padding
    cfg_options={
        DRY_DET: {'model.train_cfg.rpn_proposal.max_per_img': 100,
                  'model.train_cfg.rcnn.sampler.num': 32,
                  'model.roi_head.bbox_head.fc_out_channels': 128,
                  'model.roi_head.mask_head.num_convs': 1},
        DRY_SEG: {'model.data_preprocessor.size': (64, 64)},
        'configs/segmentation/demo_fpn_fcvit_tiny_shapes.py':
            {'model.data_preprocessor.size': (64, 64)}},
    budgets=dict(env=30, tests=60, eager=60, dense=60, compile=60))


# ---------------------------------------------------------------------- #
# the plan: which cells each section has
# ---------------------------------------------------------------------- #
def plan(args) -> Dict[str, List[dict]]:
    """``{section: [cell, ...]}`` for the sections of this run. A cell is
    a dict with its ``key`` (unique in the run) and what it measures."""
    cells = {}
    amps = ['bf16', 'none']
    for section in args.sections:
        if section in ('env', 'tests'):
            cells[section] = [dict(key=section)]
        elif section == 'eager':
            cells[section] = [
                dict(key=f'eager/{m}/{a}/{mode}', model=m, amp=a, mode=mode,
                     compiled=False)
                for m in args.eager_models for a in amps
                for mode in ('inference', 'train')]
        elif section == 'compile':
            cells[section] = [
                dict(key=f'compile/{m}/bf16/{mode}', model=m, amp='bf16',
                     mode=mode, compiled=True)
                for m in args.compile_models
                for mode in ('train', 'inference')]
        elif section == 'dense':
            cells[section] = [
                dict(key=f'dense/{task}/{spec}', task=task, spec=spec,
                     batch=batch, size=list(size), amp=args.dense_amp,
                     mode='train')
                for task, specs, batch, size in args.dense
                for spec in specs]
    return cells


# ---------------------------------------------------------------------- #
# the parent: sections as subprocesses, results, table
# ---------------------------------------------------------------------- #
def _install_wheels(wheels: str, site: str, log) -> Optional[str]:
    """``pip install --target site`` of the wheels in ``wheels`` (no index,
    no dependencies); returns an error message or None."""
    found = sorted(f for f in os.listdir(wheels) if f.endswith('.whl'))
    if not found:
        return f'no wheels in {wheels}'
    cmd = [sys.executable, '-m', 'pip', 'install', '-q', '--no-index',
           '--no-deps', '--no-compile', '--no-cache-dir', '--upgrade',
           '--target', site] + [osp.join(wheels, f) for f in found]
    res = subprocess.run(cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    log.write(f'$ {" ".join(cmd)}\n{res.stdout}\n')
    if res.returncode:
        return f'pip install of {len(found)} wheels failed ' \
            f'(rc={res.returncode}): {res.stdout.strip()[-300:]}'
    return None


def _child_env(site: Optional[str]) -> dict:
    paths = ([site] if site else []) + [ROOT]
    old = os.environ.get('PYTHONPATH')
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        paths + ([old] if old else [])), PYTHONUNBUFFERED='1')


def _run_section(section: str, timeout: float, args, results: str, env,
                 log) -> dict:
    """Run one section in its own process group, stopped at ``timeout``
    seconds; what the section wrote to ``results`` stays."""
    cmd = [sys.executable, args.script, '--section', section, '--results',
           results, '--deadline', repr(time.time() + timeout)
           ] + args.child_argv
    log.write(f'\n===== section {section} (budget {timeout:.0f} s)\n')
    log.flush()
    start = time.time()
    if timeout <= 1:
        return dict(rc=None, seconds=0.0,
                    reason='no time left in the run for this section')
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=ROOT, start_new_session=True)
    reason = None
    try:
        rc = proc.wait(timeout=timeout)
        if rc:
            reason = f'section process exited with status {rc}'
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # compile workers too
        except ProcessLookupError:
            pass
        proc.wait()
        rc = None
        reason = f'section stopped at its time budget ({timeout:.0f} s)'
    return dict(rc=rc, seconds=time.time() - start, reason=reason)


def _read_results(path: str) -> Dict[str, dict]:
    out = {}
    if osp.isfile(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    rec = json.loads(line)
                    out[rec['key']] = rec
    return out


def run_parent(args) -> dict:
    """The whole check; returns the results dict (also written to
    ``--out``)."""
    start = time.time()
    out_dir = args.out
    tmp = args.work_dir
    os.makedirs(tmp, exist_ok=True)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    log_path = osp.join(out_dir or tmp, 'gpu_check.log')
    results_path = osp.join(tmp, 'cells.jsonl')
    if osp.exists(results_path):
        os.remove(results_path)
    cells = plan(args)
    sections = {}
    with open(log_path, 'w') as log:
        site = None
        if args.wheels:
            site = osp.join(tmp, 'site')
            t = time.time()
            err = _install_wheels(args.wheels, site, log)
            sections['install'] = dict(seconds=time.time() - t, reason=err)
            print(f'[gpu_check] wheels from {args.wheels}: '
                  f'{err or "installed"} ({time.time() - t:.0f} s)',
                  flush=True)
        env = _child_env(site)
        deadline = start + args.budget - RESERVE
        for i, section in enumerate(args.sections):
            later = sum(args.budgets[s] for s in args.sections[i + 1:])
            left = deadline - time.time()
            # its nominal budget at least (while time is left), plus what
            # the earlier sections saved; the last one gets all that's left
            timeout = max(left - later, min(args.budgets[section], left))
            print(f'[gpu_check] {section}: up to {timeout:.0f} s',
                  flush=True)
            sections[section] = _run_section(section, timeout, args,
                                             results_path, env, log)
            done = sections[section]
            print(f'[gpu_check] {section}: {done["seconds"]:.0f} s'
                  + (f'; {done["reason"]}' if done['reason'] else ''),
                  flush=True)
    records = _read_results(results_path)
    for section, planned in cells.items():
        for cell in planned:
            if cell['key'] not in records:
                reason = sections.get(section, {}).get('reason') or \
                    'not reached'
                records[cell['key']] = dict(cell, section=section,
                                            status='not run', reason=reason)
    result = dict(args=dict(budget=args.budget, dry_run=args.dry_run,
                            device=args.device, sections=args.sections),
                  seconds=time.time() - start, sections=sections,
                  cells=[records[c['key']] for s in args.sections
                         for c in cells.get(s, [])])
    if out_dir:
        with open(osp.join(out_dir, 'gpu_check.json'), 'w') as f:
            json.dump(result, f, indent=1)
    with open(log_path, 'a') as log:
        table = format_report(result)
        log.write('\n' + table + '\n')
    print(table, flush=True)
    return result


# ---------------------------------------------------------------------- #
# the report
# ---------------------------------------------------------------------- #
def _fmt(v, spec='.1f'):
    return '-' if v is None else format(v, spec)


def _ratio(a, b) -> str:
    """``a / b`` to two decimals, ``-`` when either is missing."""
    return _fmt(a / b if a and b else None, '.2f')


def _val(rec: Optional[dict], field: str):
    if rec is None or rec.get('status') != 'ok':
        return None
    return rec.get(field)


def _mark(rec: Optional[dict]) -> Optional[str]:
    """'FAIL' / 'skip' / 'n/r' for a cell that gave no number."""
    if rec is None:
        return None
    return dict(failed='FAIL', skipped='skip').get(rec['status'], 'n/r') \
        if rec['status'] != 'ok' else None


def _best(recs: List[Optional[dict]]) -> Optional[float]:
    ts = [_val(r, 'ms') for r in recs]
    ts = [t for t in ts if t is not None]
    return min(ts) if ts else None


def _table_head(title: str, header: str) -> List[str]:
    """A blank line, the table's title, its header and a rule."""
    return ['', title, header, '-' * len(header)]


def _image_rows(cells: Dict[str, dict], models: List[str], amp: str,
                mode: str) -> List[str]:
    """The image table's rows of one precision and mode."""
    def rec(m, kind):
        return cells.get(f'{kind}/{m}/{amp}/{mode}')

    r_eager = _best([rec(RESNET, 'eager'), rec(RESNET + '-cl', 'eager')])
    r_best = _best([rec(RESNET, 'eager'), rec(RESNET + '-cl', 'eager'),
                    rec(RESNET + '-cl', 'compile')])
    r_mem = [_val(rec(m, 'eager'), 'peak_mib')
             for m in (RESNET, RESNET + '-cl')]
    r_mem = min([m for m in r_mem if m], default=None)
    lines = []
    for m in models:
        e, c = rec(m, 'eager'), rec(m, 'compile')
        if e is None and c is None:
            continue
        te, tc = _val(e, 'ms'), _val(c, 'ms')
        best = _best([e, c])
        mem = _val(e, 'peak_mib')
        fp = (e or c or {}).get('kernels')
        lines.append(
            f'{m:<20} {str("-" if fp is None else fp):<9} '
            f'{amp:<5} {mode:<9} '
            f'{_mark(e) or _fmt(te):>8} '
            f'{_ratio(r_eager, te):>7} '
            f'{(_mark(c) or _fmt(tc)) if c else "":>9} '
            f'{_ratio(r_best, best):>7} '
            f'{_fmt(mem, ".0f"):>9} {_ratio(mem, r_mem):>6}')
    return lines


def _image_table(result: dict, cells: Dict[str, dict]) -> List[str]:
    """The image models' table (eager and compiled cells)."""
    image = [c for c in result['cells'] if c['key'].startswith(
        ('eager/', 'compile/'))]
    if not image:
        return []
    lines = _table_head(
        'Image models (backbone + linear head), ms per step; x R-50 = '
        'throughput / ResNet-50\'s in this run (eager: vs its best '
        'eager layout; best: each model\'s best of eager and compiled '
        'vs ResNet-50\'s best); mem = peak training memory / R-50\'s',
        f'{"model":<20} {"kernels":<9} {"amp":<5} {"mode":<9} '
        f'{"eager":>8} {"x R-50":>7} {"compiled":>9} '
        f'{"best x":>7} {"peak MiB":>9} {"mem x":>6}')
    models = list(dict.fromkeys(c['model'] for c in image))
    for amp in ('bf16', 'none'):
        for mode in ('inference', 'train'):
            lines += _image_rows(cells, models, amp, mode)
    return lines


def _dense_table(result: dict) -> List[str]:
    """The dense models' table, each against the library's R-50 model."""
    dense = [c for c in result['cells'] if c['key'].startswith('dense/')]
    if not dense:
        return []
    lines = _table_head(
        'Dense models, one training iteration (data preprocessor + loss + '
        'backward), x = throughput / the R-50 model\'s',
        f'{"model":<44} {"batch":>5} {"size":>9} {"amp":<5} '
        f'{"ms/iter":>8} {"x R-50":>7} {"peak MiB":>9} {"mem x":>6}')
    for task in dict.fromkeys(c['task'] for c in dense):
        group = [c for c in dense if c['task'] == task]
        # the library's own R-50 model
        ref = next((c for c in group if '::' in c['spec']), None)
        r_ms, r_mem = _val(ref, 'ms'), _val(ref, 'peak_mib')
        for c in group:
            ms, mem = _val(c, 'ms'), _val(c, 'peak_mib')
            name = c['spec'].split('::')[-1].split('/')[-1]
            size = 'x'.join(map(str, c['size']))
            lines.append(
                f'{name:<44} {c["batch"]:>5} {size:>9} {c["amp"]:<5} '
                f'{_mark(c) or _fmt(ms):>8} '
                f'{_ratio(r_ms, ms):>7} '
                f'{_fmt(mem, ".0f"):>9} {_ratio(mem, r_mem):>6}')
    return lines


def format_report(result: dict) -> str:
    """The table (printed last): tests, image models, dense models, then
    every cell that gave no number, with its reason."""
    cells = {c['key']: c for c in result['cells']}
    lines = []
    env = cells.get('env')
    if env and env.get('status') == 'ok':
        lines.append('GPU check: ' + env['summary'])
    lines.append(f'total {result["seconds"]:.0f} s; sections: ' + ', '.join(
        f'{k} {v["seconds"]:.0f} s' for k, v in result['sections'].items()))
    tests = cells.get('tests')
    if tests:
        lines.append('CUDA tests: ' + (tests.get('summary') or
                                       f'{tests["status"]}: '
                                       f'{tests.get("reason")}'))
    lines += _image_table(result, cells)
    lines += _dense_table(result)
    missing = [c for c in result['cells'] if c['status'] != 'ok'
               and c['key'] not in ('env', 'tests')]
    if env and env['status'] != 'ok':
        missing.insert(0, env)
    if missing:
        lines += ['', 'Cells without a number:']
        lines += [f'  {c["key"]}: {c["status"]}: {c.get("reason")}'
                  for c in missing]
    return '\n'.join(lines)


# ---------------------------------------------------------------------- #
# the sections (child processes)
# ---------------------------------------------------------------------- #
class _Writer:
    """Appends one JSON line per finished cell to the results file."""

    def __init__(self, path: str, section: str):
        self.path, self.section = path, section

    def write(self, cell: dict, status: str, **fields):
        rec = dict(cell, section=self.section, status=status, **fields)
        with open(self.path, 'a') as f:
            f.write(json.dumps(rec) + '\n')
        print(f'[{self.section}] {cell["key"]}: {status} '
              f'{fields.get("ms", "") and "%.1f ms" % fields["ms"]}'
              f'{fields.get("reason") or ""}', flush=True)


def _error_text(e: BaseException) -> str:
    text = f'{type(e).__name__}: {e}'.strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _section_env(cells, args, writer):
    import platform

    import numpy
    import torch
    info = dict(python=platform.python_version(), torch=torch.__version__,
                numpy=numpy.__version__, cpus=os.cpu_count())
    try:
        import torchvision
        info['torchvision'] = torchvision.__version__
    except ImportError as e:
        info['torchvision'] = f'missing ({e})'
    for pkg in ('triton', 'mmengine', 'mmcv', 'mmdet', 'mmseg'):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception as e:  # noqa: BLE001
            info[pkg] = f'missing ({_error_text(e)})'
    from tools.analysis.lib.ops_standin import compiled_ops_available
    try:
        info['mmcv_ops'] = ('compiled' if compiled_ops_available() else
                            'torchvision stand-in')
    except Exception as e:  # noqa: BLE001
        info['mmcv_ops'] = f'unavailable ({_error_text(e)})'
    if args.ops_standin == 'force':
        info['mmcv_ops'] = 'torchvision stand-in (forced)'
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
        info['cuda'] = torch.version.cuda
        info['cudnn'] = torch.backends.cudnn.version()
    else:
        info['gpu'] = 'none (CPU)'
    summary = (f'{info["gpu"]}, torch {info["torch"]} (CUDA '
               f'{info.get("cuda")}, cuDNN {info.get("cudnn")}), '
               f'torchvision {info["torchvision"]}, triton {info["triton"]}'
               f', numpy {info["numpy"]}, python {info["python"]}, '
               f'{info["cpus"]} CPUs; mmengine {info["mmengine"]}, mmcv '
               f'{info["mmcv"]} (ops: {info["mmcv_ops"]}), mmdet '
               f'{info["mmdet"]}, mmseg {info["mmseg"]}')
    writer.write(cells[0], 'ok', summary=summary, info=info)


def _section_tests(cells, args, writer):
    import glob
    files = [f for f in TEST_FILES if osp.isfile(osp.join(ROOT, f))]
    for pattern in TEST_GLOBS:
        files += sorted(osp.relpath(p, ROOT)
                        for p in glob.glob(osp.join(ROOT, pattern)))
    files = list(dict.fromkeys(files))
    cmd = [sys.executable, '-m', 'pytest', *files, '-k', TEST_SELECT, '-q',
           '-rs', '-p', 'no:cacheprovider']
    print('$ ' + ' '.join(cmd), flush=True)
    timeout = max(1.0, args.deadline - time.time() - 2)
    try:
        res = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else \
            (e.stdout or '')
        print(out, flush=True)
        writer.write(cells[0], 'failed', reason=f'pytest did not finish in '
                     f'{timeout:.0f} s')
        return
    print(res.stdout, flush=True)
    summary = next((ln.strip('= ') for ln in reversed(
        res.stdout.strip().splitlines()) if ' in ' in ln and (
            'passed' in ln or 'failed' in ln or 'skipped' in ln or
            'deselected' in ln or 'error' in ln)), None)
    summary = f'{summary} ({" ".join(files)} -k {TEST_SELECT})'
    # 0: all passed; 5: nothing selected (no CUDA test in these files)
    status = 'ok' if res.returncode in (0, 5) else 'failed'
    writer.write(cells[0], status, summary=summary, rc=res.returncode,
                 reason=None if status == 'ok' else
                 f'pytest exit status {res.returncode}: {summary}')


def _measure_args(args, **over):
    ns = argparse.Namespace(
        device=args.device, amp='none', batch=args.batch, size=args.size,
        warmup=args.warmup, reps=args.reps, backbone_only=False,
        channels_last=False, compile=False)
    for k, v in over.items():
        setattr(ns, k, v)
    return ns


def _ops_in(model) -> dict:
    """Which ``mmcv.ops`` the model runs on: the stand-in or mmcv's
    compiled ops, and the classes of its RoI layers."""
    from tools.analysis.lib.ops_standin import is_installed
    layers = sorted({f'{type(m).__module__}.{type(m).__name__}'
                     for m in model.modules()
                     if type(m).__name__ == 'RoIAlign'})
    return dict(ops='stand-in' if is_installed() else 'compiled',
                roi_layers=layers)


def _time_cell(target, cell, margs, writer, with_memory: bool, **extra):
    from tools.analysis.lib import measure
    t0 = time.time()
    # the first step alone: it holds cuDNN's search, or the compilation
    first = measure.timed(
        lambda: measure.run_step(target, cell['mode'], margs), margs.device)
    times = measure.time_steps([target], [cell['mode']], margs)
    ts = times[(target.name, cell['mode'], margs.amp)]
    fields = dict(ms=statistics.median(ts) * 1e3, ms_min=min(ts) * 1e3,
                  ms_max=max(ts) * 1e3, reps=len(ts),
                  warmup=margs.warmup, images=target.images,
                  kernels=getattr(target, 'kernels', None),
                  channels_last=target.channels_last, first_step_s=first)
    if with_memory:
        peak = measure.peak_memory(
            lambda: measure.run_step(target, cell['mode'], margs),
            margs.device)
        fields['peak_mib'] = None if peak is None else peak / 2**20
    fields['seconds'] = time.time() - t0
    writer.write(cell, 'ok', **fields, **extra)
    return fields['seconds']


class _Clock:
    """The section's time left, and whether a cell of a kind fits (the
    longest cell of that kind so far, with a margin)."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.longest: Dict[str, float] = {}

    def left(self) -> float:
        return self.deadline - time.time()

    def fits(self, kind: str) -> Optional[str]:
        need = 1.2 * self.longest.get(kind, 0.0)
        if need > self.left():
            return (f'not enough of the section\'s budget left (such a cell '
                    f'took {need / 1.2:.0f} s, {self.left():.0f} s left)')
        return None

    def took(self, kind: str, seconds: float):
        self.longest[kind] = max(self.longest.get(kind, 0.0), seconds)

    def run(self, kind: str, cell: dict, writer, work, on_failure=None):
        """``work()`` for ``cell`` if a cell of ``kind`` fits (else the
        cell is written as skipped); an exception is printed, the cell
        written as failed, and ``on_failure()`` called. The time taken,
        clean-up included, counts for ``kind``."""
        why = self.fits(kind)
        if why:
            writer.write(cell, 'skipped', reason=why)
            return
        t0 = time.time()
        failed = False
        try:
            work()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            writer.write(cell, 'failed', reason=_error_text(e),
                         seconds=time.time() - t0)
            failed = True
        if failed and on_failure is not None:  # the traceback let go of
            on_failure()                       # what the cell had built
        self.took(kind, time.time() - t0)


def _cleanup():
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _section_image(cells, args, writer):
    """``eager`` or ``compile``: cells grouped by model, each model built
    once per precision setting."""
    import torch
    from tools.analysis.lib import measure
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    clock = _Clock(args.deadline)
    models = list(dict.fromkeys(c['model'] for c in cells))
    for model in models:
        group = [c for c in cells if c['model'] == model]
        compiled = group[0]['compiled']
        compile_kwargs = False
        if compiled:
            compile_kwargs = dict(backend=args.compile_backend)
            if args.compile_mode:
                compile_kwargs['mode'] = args.compile_mode
        target = None

        def time_cell(cell):
            nonlocal target
            margs = _measure_args(args, amp=cell['amp'],
                                  compile=compile_kwargs)
            if target is None:
                torch.manual_seed(0)
                target = measure.ImageTarget(model, margs)
            _time_cell(target, cell, margs, writer,
                       with_memory=cell['mode'] == 'train')

        def drop_target():
            nonlocal target
            target = None
            _cleanup()

        for cell in group:
            # compiling dominates a compiled cell: any model is a guide
            kind = f'compile/{cell["mode"]}' if compiled else \
                f'eager/{cell["mode"]}/{cell["amp"]}/{model}'
            clock.run(kind, cell, writer, lambda: time_cell(cell),
                      on_failure=drop_target)
        del target
        _cleanup()
        if compiled:
            torch._dynamo.reset()


def _section_dense(cells, args, writer):
    import torch
    from tools.analysis.lib import measure
    from tools.analysis.lib.ops_standin import install_ops_standin
    install_ops_standin(force=args.ops_standin == 'force')
    torch.backends.cudnn.benchmark = False  # input sizes vary in training
    clock = _Clock(args.deadline)

    def time_cell(cell):
        margs = _measure_args(args, amp=cell['amp'], batch=cell['batch'],
                              size=cell['size'], warmup=args.dense_warmup,
                              reps=args.dense_reps,
                              cfg_options=args.cfg_options.get(cell['spec']))
        spec = cell['spec']
        if not spec.startswith(('mmdet::', 'mmseg::')):
            spec = osp.join(ROOT, spec)
        target = measure.ConfigTarget(spec, margs)
        _time_cell(target, cell, margs, writer, with_memory=True,
                   **_ops_in(target.model))
        del target
        _cleanup()

    for cell in cells:
        clock.run(cell['task'], cell, writer, lambda: time_cell(cell),
                  on_failure=_cleanup)


SECTION_FUNCS = dict(env=_section_env, tests=_section_tests,
                     eager=_section_image, compile=_section_image,
                     dense=_section_dense)


def run_section(args):
    """The child: run the cells of ``args.section``, appending each to
    ``args.results``."""
    import torch

    from tools.analysis.lib import measure
    torch.manual_seed(0)
    if args.device == 'cpu':
        torch.set_num_threads(args.threads)
        # peak memory on the CPU without pinning glibc's mmap threshold:
        # pinned, every later step of the section runs much slower
        measure.PIN_MMAP_THRESHOLD = False
    args.sections = [args.section]
    cells = plan(args)[args.section]
    SECTION_FUNCS[args.section](cells, args, _Writer(args.results,
                                                     args.section))


# ---------------------------------------------------------------------- #
# command line
# ---------------------------------------------------------------------- #
def _parser() -> argparse.ArgumentParser:
    """The command line of the parent and of the sections (children)."""
    p = argparse.ArgumentParser(
        description='The GPU check: CUDA tests and the benchmark table of '
        'FCViT against ResNet-50, in bounded time',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__)
    p.add_argument('--budget', type=float, default=360,
                   help='seconds for the whole run (default 360)')
    p.add_argument('--sections', nargs='+', choices=SECTIONS,
                   default=list(SECTIONS))
    p.add_argument('--wheels', help='a folder of wheels to install first '
                   '(pip --target, no index; tools/analysis/gpu_wheels.sh '
                   'makes it)')
    p.add_argument('--out', default=os.environ.get('OUT') or None,
                   help='folder for gpu_check.json and gpu_check.log '
                   '(default $OUT when set)')
    p.add_argument('--work-dir', default=None,
                   help='scratch folder (default: a fresh one under /tmp)')
    p.add_argument('--dry-run', action='store_true',
                   help='every section and code path on the CPU, tiny '
                   'sizes, mmcv.ops stand-in forced, compile backend eager')
    p.add_argument('--device', default=None,
                   help='default cuda (cpu with --dry-run)')
    p.add_argument('--batch', type=int, default=None,
                   help='image models (default 64; 1 with --dry-run)')
    p.add_argument('--size', type=int, nargs=2, default=None,
                   help='image models H W (default 224 224; 64 64 dry)')
    p.add_argument('--reps', type=int, default=None,
                   help='timed steps per cell (default 10; 1 dry)')
    p.add_argument('--warmup', type=int, default=None,
                   help='warm-up steps per cell after the first (default 3; 0 '
                   'dry)')
    p.add_argument('--dense-reps', type=int, default=None,
                   help='timed iterations per dense cell (default 5)')
    p.add_argument('--dense-warmup', type=int, default=None,
                   help='warm-up iterations per dense cell (default 2)')
    p.add_argument('--dense-amp', default='fp16',
                   choices=['fp16', 'bf16', 'none'],
                   help='autocast of the dense cells (default fp16, as '
                   "mmdet's AmpOptimWrapper; none with --dry-run)")
    p.add_argument('--dense-only', nargs='+', default=None,
                   metavar='TEXT', help='only the dense models whose config '
                   'names contain one of these')
    p.add_argument('--eager-models', nargs='+', default=None)
    p.add_argument('--compile-models', nargs='+', default=None,
                   help='in priority order')
    p.add_argument('--compile-backend', default=None,
                   help='torch.compile backend (default inductor; eager '
                   'with --dry-run)')
    p.add_argument('--compile-mode', default=None,
                   help='torch.compile mode (default: none given)')
    p.add_argument('--ops-standin', choices=['auto', 'force'],
                   default=None, help='mmcv.ops stand-in when mmcv\'s '
                   'compiled ops are missing (auto), or always (force; '
                   'default with --dry-run)')
    p.add_argument('--threads', type=int, default=2,
                   help='torch CPU threads with --device cpu')
    # the child's own options
    p.add_argument('--section', choices=SECTIONS, help=argparse.SUPPRESS)
    p.add_argument('--results', help=argparse.SUPPRESS)
    p.add_argument('--deadline', type=float, help=argparse.SUPPRESS)
    return p


def _apply_defaults(args) -> None:
    """Fill the options left unset: the GPU run's values, or the dry
    run's (every section on the CPU, tiny)."""
    dry = args.dry_run
    defaults = dict(
        device='cpu' if dry else 'cuda', batch=1 if dry else 64,
        size=[64, 64] if dry else [224, 224], reps=1 if dry else 10,
        warmup=0 if dry else 3, dense_reps=1 if dry else 5,
        dense_warmup=0 if dry else 2,
        eager_models=list(DRY['eager_models'] if dry else EAGER_MODELS),
        compile_models=list(DRY['compile_models'] if dry else
                            COMPILE_MODELS),
        compile_backend='eager' if dry else 'inductor',
        ops_standin='force' if dry else 'auto')
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if dry and args.dense_amp == 'fp16':
        args.dense_amp = 'none'  # fp16 autocast is for CUDA
    args.dense = DRY['dense'] if dry else DENSE
    if args.dense_only:
        args.dense = [(task, [s for s in specs if any(
            t in s for t in args.dense_only)], batch, size)
            for task, specs, batch, size in args.dense]
    args.cfg_options = DRY['cfg_options'] if dry else {}
    args.budgets = dict(DRY['budgets'] if dry else BUDGETS)


def parse_args(argv=None, script: Optional[str] = None):
    p = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    _apply_defaults(args)
    if args.budget <= RESERVE:
        p.error(f'--budget must be more than {RESERVE} s')
    if args.batch < 1 or args.reps < 1 or args.warmup < 0:
        p.error('--batch and --reps must be >= 1, --warmup >= 0')
    if args.section and (args.results is None or args.deadline is None):
        p.error('--section needs --results and --deadline')
    args.script = script or osp.abspath(sys.argv[0])
    if args.work_dir is None and not args.section:
        import tempfile
        args.work_dir = tempfile.mkdtemp(prefix='fcvit_gpu_check_')
    # the children parse the same options (and ignore the parent's own)
    child = list(argv)
    args.child_argv = child
    return args


def main(argv=None, script: Optional[str] = None):
    args = parse_args(argv, script)
    if args.section:
        run_section(args)
        return None
    return run_parent(args)
