#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The one-command demo: generate the synthetic-shapes data, train an FCViT
model on it with ``tools/train.py``, evaluate the final checkpoint with
``tools/test.py``, and draw the results.

    python tools/demo.py [--task {det,seg,cls}] [--work-dir DIR]
        [--data-root DIR] [--max-iters N] [--val-interval N]
        [--num-train N] [--num-val N] [--num-show N] [--threads N]
        [--precision {auto,bf16,fp32}] [--cfg-options k=v ...]

Tasks: ``det`` Mask R-CNN (COCO layout, bbox/segm AP), ``seg`` Semantic FPN
(ADE20K layout, mIoU), ``cls`` image classification (ImageNet layout,
top-1). The two tools run as their own processes, as a user would run
them. Written to the work dir (default ``work_dirs/demo`` for det,
``work_dirs/demo_seg`` / ``work_dirs/demo_cls``): the config used, the
checkpoint, the logs, ``curves.png`` (``tools/analysis/plot_curves.py``:
training loss and the validation metric), ``predictions/`` (every val
image with its ground truth and prediction, drawn by the library's own
visualizer through ``tools/test.py --show-dir``), ``predictions.png`` (the
first ``--num-show`` of them side by side), ``summary.json``; a summary is
printed at the end.

Precision: by default (``auto``) the training runs in bf16 mixed precision
(``tools/train.py --amp``: bf16 autocast, float32 weights) on a CPU that
runs bf16 natively (AMX or AVX-512 bf16, :mod:`fcvit_mm.utils.cpu`), in
float32 elsewhere; the output says which, and why.
"""
import argparse
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

# Idle OpenMP threads sleep instead of spinning. Alone on the machine this
# costs nothing measurable; next to another multi-threaded process on two
# cores, spinning made each training step ~15x slower (0.8 s -> 20 s).
# Must be set before torch is imported; an explicit setting wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: --precision: auto (bf16 where the CPU runs it natively), bf16, fp32
PRECISIONS = ('auto', 'bf16', 'fp32')
sys.path.insert(0, ROOT)

#: the demo's data: 128 x 128 images, up to 3 shapes of 32-64 pixels each,
#: at most 20% of a shape hidden by another (the generator's defaults allow
#: 4 shapes of 26-64 pixels and 40% hidden)
SHAPES = dict(img_size=128, seed=0, num_objects=(1, 3),
              size_range=(0.25, 0.5), min_visible=0.8)

#: per task: config, data layout, default dataset size and what to report
TASKS = {
    'det': dict(
        config='configs/detection/demo_maskrcnn_fcvit_tiny_shapes.py',
        fmt='coco', work_dir='work_dirs/demo', num_train=1000, num_val=100,
        metrics=[('bbox AP@0.5', 'coco/bbox_mAP_50'),
                 ('bbox AP', 'coco/bbox_mAP'),
                 ('mask AP@0.5', 'coco/segm_mAP_50'),
                 ('mask AP', 'coco/segm_mAP')]),
    'seg': dict(
        config='configs/segmentation/demo_fpn_fcvit_tiny_shapes.py',
        fmt='ade20k', work_dir='work_dirs/demo_seg', num_train=1000,
        num_val=100, metrics=[('mIoU', 'mIoU'), ('aAcc', 'aAcc')]),
    'cls': dict(
        config='configs/classification/demo_fcvit_tiny_shapes.py',
        fmt='imagenet', work_dir='work_dirs/demo_cls', num_train=2000,
        num_val=200, shapes=dict(img_size=64),
        metrics=[('top-1', 'accuracy/top1')],
        # the 64 x 64 images drawn 4x larger, so that the text fits
        show_options=['default_hooks.visualization.rescale_factor=4']),
}
#: metrics that the libraries report in percent
PERCENT = ('mIoU', 'aAcc', 'top-1')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Train and evaluate FCViT on generated shapes')
    p.add_argument('--task', default='det', choices=sorted(TASKS))
    p.add_argument('--work-dir', help='output folder (default: '
                   'work_dirs/demo, work_dirs/demo_seg, work_dirs/demo_cls)')
    p.add_argument('--data-root', default='data/shapes',
                   help='the generated data go to DATA_ROOT/<layout>')
    p.add_argument('--num-train', type=int, help='generated train images')
    p.add_argument('--num-val', type=int, help='generated val images')
    p.add_argument('--max-iters', type=int,
                   help='training iterations (the schedule is rescaled)')
    p.add_argument('--val-interval', type=int,
                   help='validate (and checkpoint) every N iterations')
    p.add_argument('--num-show', type=int, default=8,
                   help='drawn val images in the predictions.png overview')
    p.add_argument('--num-workers', type=int,
                   help='dataloader worker processes (default: the config\'s)')
    p.add_argument('--threads', type=int,
                   help='torch CPU threads (default: torch\'s choice)')
    p.add_argument('--precision', choices=PRECISIONS, default='auto',
                   help='training precision: auto (default): bf16 mixed '
                   'precision (tools/train.py --amp) on a CPU with native '
                   'bf16, float32 elsewhere; bf16: ask for it (float32, '
                   'and why, on a CPU without it); fp32: float32 '
                   '(the output says which)')
    p.add_argument('--amp', dest='precision', action='store_const',
                   const='bf16', help='the same as --precision bf16')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='more config overrides, key=value')
    args = p.parse_args(argv)
    for name in ('num_train', 'num_val', 'max_iters', 'val_interval',
                 'threads'):
        val = getattr(args, name)
        if val is not None and val < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1, got {val}')
    for name in ('num_show', 'num_workers'):
        if (getattr(args, name) or 0) < 0:
            p.error(f'--{name.replace("_", "-")} must be >= 0')
    return args


# --------------------------------------------------------------------------
# the config
# --------------------------------------------------------------------------
def _set_data_root(cfg, task, data_root):
    root = data_root.rstrip('/') + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = root
    if task == 'det':
        for key in ('val_evaluator', 'test_evaluator'):
            cfg[key].ann_file = root + 'annotations/instances_val2017.json'


def _rescale_schedule(cfg, max_iters, val_interval):
    """A shorter or longer run of the same schedule."""
    old = cfg.train_cfg.max_iters
    if max_iters is not None and max_iters != old:
        ratio = max_iters / old
        for sched in cfg.param_scheduler:
            if sched.get('by_epoch', True):
                continue
            begin = sched.get('begin', 0)
            end = sched.get('end', old)
            sched['begin'] = min(int(round(begin * ratio)), max_iters - 1)
            sched['end'] = max(min(int(round(end * ratio)), max_iters),
                               sched['begin'] + 1)
            if 'T_max' in sched:
                sched['T_max'] = sched['end'] - sched['begin']
        cfg.train_cfg.max_iters = max_iters
        logger = cfg.default_hooks.logger
        logger.interval = min(logger.get('interval', 50),
                              max(1, max_iters // 10))
        if val_interval is None:
            val_interval = min(cfg.train_cfg.val_interval, max_iters)
    if val_interval is not None:
        cfg.train_cfg.val_interval = val_interval
        cfg.default_hooks.checkpoint.interval = val_interval


def build_config(args, task, data_root, work_dir):
    """The task's demo config with the command line applied, written to the
    work dir (it is what tools/train.py and tools/test.py then read)."""
    from mmengine.config import Config, DictAction
    from fcvit_mm.utils.config import load_config
    cfg = load_config(osp.join(ROOT, TASKS[task]['config']))
    _set_data_root(cfg, task, data_root)
    _rescale_schedule(cfg, args.max_iters, args.val_interval)
    if args.num_workers is not None:
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[key].num_workers = args.num_workers
            cfg[key].persistent_workers = args.num_workers > 0
    cfg.work_dir = work_dir
    if args.cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(
            ['--o'] + list(args.cfg_options)).o)
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, osp.basename(TASKS[task]['config']))
    cfg.dump(path)
    return Config.fromfile(path), path


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------
def run_tool(tool, argv, threads=None):
    """``python tools/<tool>.py ARGV`` in its own process (``threads``:
    its torch CPU threads, through ``OMP_NUM_THREADS``)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    cmd = [sys.executable, osp.join(ROOT, 'tools', tool + '.py')] + argv
    res = subprocess.run(cmd, env=env)
    if res.returncode != 0:
        raise RuntimeError(f'tools/{tool}.py failed (exit status '
                           f'{res.returncode}): {" ".join(cmd)}')


def _final_checkpoint(work_dir):
    """The checkpoint mmengine's ``last_checkpoint`` names, else the
    newest (one rule with ``--resume``: engine.resume)."""
    from fcvit_mm.engine.resume import checkpoint_candidates
    found = checkpoint_candidates(work_dir)
    if not found:
        raise RuntimeError(f'training left no checkpoint in {work_dir!r}')
    return found[0]


def _test_metrics(work_dir, since):
    """The metrics that tools/test.py logged (``<ts>/<ts>.json``) in a run
    started at ``since`` or later."""
    logs = [p for p in glob.glob(osp.join(work_dir, '*', '*.json'))
            if osp.basename(p) == osp.basename(osp.dirname(p)) + '.json'
            and osp.getmtime(p) >= since - 1]  # coarse file times
    if not logs:
        raise RuntimeError(f'tools/test.py logged no metrics in {work_dir!r}')
    with open(max(logs)) as f:
        return json.load(f)


def _drawn_images(show_dir):
    return sorted(p for p in glob.glob(osp.join(show_dir, '**', '*'),
                                       recursive=True)
                  if p.lower().endswith(('.png', '.jpg', '.jpeg')))


def save_overview(paths, out_file, cols):
    """The pictures ``paths`` in a grid (white padding), as one PNG."""
    import mmcv
    import numpy as np
    imgs = [mmcv.imread(p) for p in paths]
    h = max(i.shape[0] for i in imgs)
    w = max(i.shape[1] for i in imgs)
    tiles = [np.pad(i, ((0, h - i.shape[0]), (0, w - i.shape[1]), (0, 0)),
                    constant_values=255) for i in imgs]
    tiles += [np.full((h, w, 3), 255, np.uint8)] * (-len(tiles) % cols)
    rows = [np.concatenate(tiles[k:k + cols], 1)
            for k in range(0, len(tiles), cols)]
    mmcv.imwrite(np.concatenate(rows, 0), out_file)
    return out_file


def _train_and_test(args, task, cfg_path, work_dir, amp):
    """tools/train.py (with ``--amp`` if ``amp``), then tools/test.py on
    the final checkpoint with the library's visualizer drawing every val
    image; returns (checkpoint, metrics, drawn images, seconds training,
    seconds testing)."""
    t0 = time.time()
    run_tool('train', [cfg_path, '--work-dir', work_dir] +
             (['--amp'] if amp else []), args.threads)
    t_train = time.time() - t0
    ckpt = _final_checkpoint(work_dir)
    show_dir = osp.join(work_dir, 'predictions')
    if osp.isdir(show_dir):
        shutil.rmtree(show_dir)
    t0 = time.time()
    run_tool('test', [cfg_path, ckpt, '--work-dir', work_dir, '--show-dir',
                      show_dir, '--cfg-options',
                      'default_hooks.visualization.interval=1',
                      *TASKS[task].get('show_options', [])], args.threads)
    metrics = _test_metrics(work_dir, t0)
    return (ckpt, metrics, _drawn_images(show_dir), t_train,
            time.time() - t0)


def training_precision(precision: str):
    """``(amp, words)`` for ``--precision``: whether tools/train.py gets
    ``--amp``, and what the training runs in, in words. ``fp32``: float32;
    ``bf16``: ``--amp``, which trains in bf16 autocast where the CPU runs
    bf16 natively and in float32 (and says why) elsewhere
    (:mod:`fcvit_mm.engine.mixed_precision`); ``auto``: ``bf16`` where the
    CPU runs bf16 natively, float32 without ``--amp`` elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, '
                         f'got {precision!r}')
    if precision == 'fp32':
        return False, 'float32'
    from fcvit_mm.utils.cpu import bf16_support
    support = bf16_support()
    if support.native:
        return True, f'bf16 mixed precision ({support.reason})'
    return precision == 'bf16', f'float32, not bf16: {support.reason}'


def main(argv=None):
    args = parse_args(argv)
    from tools.analysis.lib.curves import find_scalars, plot_curves
    from fcvit_mm.datasets import make_shapes_dataset

    task = args.task
    spec = TASKS[task]
    work_dir = osp.abspath(args.work_dir or spec['work_dir'])
    t_start = time.time()

    # 1. the data (reused when already there)
    data = make_shapes_dataset(
        osp.join(args.data_root, spec['fmt']), spec['fmt'],
        num_train=args.num_train or spec['num_train'],
        num_val=args.num_val or spec['num_val'],
        **{**SHAPES, **spec.get('shapes', {})})
    print(f'[demo] data: {data["num_train"]} train + {data["num_val"]} val '
          f'images in {data["root"]} '
          f'({"generated" if data["generated"] else "reused"})', flush=True)

    # 2. train with tools/train.py, evaluate and draw with tools/test.py
    cfg, cfg_path = build_config(args, task, data['root'], work_dir)
    amp, precision = training_precision(args.precision)
    print(f'[demo] training {cfg_path} for {cfg.train_cfg.max_iters} '
          f'iterations, validating every {cfg.train_cfg.val_interval}, '
          f'in {precision}', flush=True)
    ckpt, metrics, drawn, t_train, t_test = _train_and_test(
        args, task, cfg_path, work_dir, amp)

    # 3. curves and an overview of the drawn predictions
    scalars = find_scalars(work_dir)
    model_name = dict(det='Mask R-CNN', seg='Semantic FPN',
                      cls='classifier')[task]
    curves = osp.join(work_dir, 'curves.png')
    plot_curves(scalars, curves, [key for _, key in spec['metrics']],
                f'FCViT-tiny {model_name} on generated shapes')
    overview = None
    if drawn and args.num_show:
        overview = save_overview(drawn[:args.num_show],
                                 osp.join(work_dir, 'predictions.png'),
                                 cols=2 if task != 'cls' else 4)

    # 4. summary
    final = {name: float(metrics[key]) for name, key in spec['metrics']
             if key in metrics}
    summary = dict(
        task=task, config=cfg_path, checkpoint=ckpt,
        log_dir=osp.dirname(osp.dirname(scalars)), curves=curves,
        predictions=drawn, predictions_overview=overview,
        data_root=data['root'], max_iters=cfg.train_cfg.max_iters,
        precision=precision,
        batch_size=cfg.train_dataloader.batch_size,
        metrics=final, all_metrics={k: float(v) for k, v in metrics.items()
                                    if isinstance(v, (int, float))},
        train_seconds=round(t_train, 1), test_seconds=round(t_test, 1),
        total_seconds=round(time.time() - t_start, 1))
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print_summary(summary)
    return summary


def print_summary(s):
    lines = [
        f'FCViT demo ({s["task"]}) finished in {s["total_seconds"] / 60:.1f}'
        f' min (training {s["train_seconds"] / 60:.1f} min, '
        f'{s["max_iters"]} iterations of batch {s["batch_size"]} in '
        f'{s["precision"]}; '
        f'evaluation {s["test_seconds"]:.0f} s)',
        f'  config       {s["config"]}',
        f'  checkpoint   {s["checkpoint"]}',
        f'  logs         {s["log_dir"]}',
        f'  curves       {s["curves"]}',
        f'  predictions  {s["predictions_overview"]} (of '
        f'{len(s["predictions"])} drawn by tools/test.py --show-dir in '
        f'{osp.join(osp.dirname(s["config"]), "predictions")})',
        '  final metrics on the val split:',
    ]
    for name, val in s['metrics'].items():
        text = f'{val:.1f}%' if name in PERCENT else f'{val:.3f}'
        lines.append(f'    {name:<12} {text}')
    width = max(len(line) for line in lines) + 2
    print('=' * width)
    print('\n'.join(lines))
    print('=' * width, flush=True)


if __name__ == '__main__':
    main()
