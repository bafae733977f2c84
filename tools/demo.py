#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The one-command demo: generate the synthetic-shapes data, train an FCViT
model on it with ``tools/train.py``, evaluate the final checkpoint with
``tools/test.py``, and draw the results.

    python tools/demo.py [--task {det,seg,cls}] [--work-dir DIR]
        [--data-root DIR] [--max-iters N] [--val-interval N]
        [--num-train N] [--num-val N] [--num-show N] [--threads N]
        [--cfg-options k=v ...]

Tasks: ``det`` Mask R-CNN (COCO layout, bbox/segm AP), ``seg`` Semantic FPN
(ADE20K layout, mIoU), ``cls`` image classification (ImageNet layout,
top-1). Written to the work dir (default ``work_dirs/demo`` for det,
``work_dirs/demo_seg`` / ``work_dirs/demo_cls``): the config used, the
checkpoint, the logs, ``curves.png`` (training loss and the validation
metric), ``predictions/*.png`` (ground truth | prediction on val images),
``summary.json``; a summary is printed at the end.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import time

# Idle OpenMP threads sleep instead of spinning. Alone on the machine this
# costs nothing measurable; next to another multi-threaded process on two
# cores, spinning made each training step ~15x slower (0.8 s -> 20 s).
# Must be set before torch is imported; an explicit setting wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
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
        metrics=[('top-1', 'accuracy/top1')]),
}
#: metrics that the libraries report in percent
PERCENT = ('mIoU', 'aAcc', 'top-1')
# the shapes' drawing colours (BGR for OpenCV) and the background's
_PALETTE_RGB = [(220, 20, 60), (0, 130, 200), (60, 180, 75)]


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
                   help='val images drawn with their predictions')
    p.add_argument('--num-workers', type=int,
                   help='dataloader worker processes (default: the config\'s)')
    p.add_argument('--threads', type=int,
                   help='torch CPU threads (default: torch\'s choice)')
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
    from fcvit_mm.engine import load_config
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
# the pictures
# --------------------------------------------------------------------------
def _read_scalars(log_dir):
    train, val = [], []
    path = osp.join(log_dir, 'vis_data', 'scalars.json')
    if not osp.isfile(path):
        return train, val
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            (train if 'loss' in rec else val).append(rec)
    return train, val


def plot_curves(log_dir, out_file, metrics, title):
    """Training loss (and its parts) and the validation metrics against the
    iteration, from mmengine's scalars.json."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    train, val = _read_scalars(log_dir)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = [r.get('iter', r.get('step')) for r in train]
        ax1.plot(steps, [r['loss'] for r in train], 'k-', lw=2, label='loss')
        parts = sorted(k for k in train[-1]
                       if k.startswith('loss_') or k.startswith('decode.loss'))
        for key in parts:
            ax1.plot(steps, [r.get(key, float('nan')) for r in train],
                     lw=1, label=key)
    ax1.set_xlabel('iteration')
    ax1.set_ylabel('training loss')
    ax1.set_title('training loss')
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    for name, key in metrics:
        pts = [(r['step'], r[key]) for r in val if key in r]
        if pts:
            scale = 0.01 if name in PERCENT else 1
            ax2.plot([p[0] for p in pts], [p[1] * scale for p in pts], 'o-',
                     label=name)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel('iteration')
    ax2.set_title('validation')
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)
    return out_file


def _bgr(i):
    r, g, b = _PALETTE_RGB[i % len(_PALETTE_RGB)]
    return (b, g, r)


def _label(img, text, org, colour):
    import cv2
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    x, y = int(org[0]), int(max(org[1], h + 2))
    cv2.rectangle(img, (x, y - h - 3), (x + w + 2, y), colour, -1)
    cv2.putText(img, text, (x + 1, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (255, 255, 255), 1, cv2.LINE_AA)


def _draw_instances(img, boxes, labels, masks, classes, scores=None,
                    scale=3):
    import cv2
    import numpy as np
    out = cv2.resize(img, None, fx=scale, fy=scale,
                     interpolation=cv2.INTER_NEAREST).astype(np.float32)
    for k in range(len(labels)):
        if masks is not None:
            m = cv2.resize(masks[k].astype(np.uint8), None, fx=scale,
                           fy=scale, interpolation=cv2.INTER_NEAREST) > 0
            out[m] = 0.45 * out[m] + 0.55 * np.array(_bgr(labels[k]))
    out = out.astype(np.uint8)
    for k in range(len(labels)):
        x0, y0, x1, y1 = (np.asarray(boxes[k], float) * scale).round()
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)),
                      _bgr(labels[k]), 2)
        text = classes[labels[k]]
        if scores is not None:
            text += f' {scores[k]:.2f}'
        _label(out, text, (x0, y0), _bgr(labels[k]))
    return out


def _panel(left, right, titles):
    import cv2
    import numpy as np
    h = max(left.shape[0], right.shape[0])
    bar = np.full((22, left.shape[1] + right.shape[1] + 6, 3), 255,
                  np.uint8)
    body = np.full((h, bar.shape[1], 3), 255, np.uint8)
    body[:left.shape[0], :left.shape[1]] = left
    body[:right.shape[0], left.shape[1] + 6:] = right
    cv2.putText(bar, titles[0], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(bar, titles[1], (left.shape[1] + 10, 16),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, body], 0)


def _save_grid(panels, path, cols=2):
    import cv2
    import numpy as np
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    rows = []
    for i in range(0, len(panels), cols):
        row = [np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1]), (0, 0)),
                      constant_values=255) for p in panels[i:i + cols]]
        row += [np.full((h, w, 3), 255, np.uint8)] * (cols - len(row))
        rows.append(np.concatenate(row, 1))
    cv2.imwrite(path, np.concatenate(rows, 0))


def draw_det(dump_file, ann_file, img_dir, out_dir, classes, num_show,
             score_thr=0.3):
    import cv2
    import numpy as np
    from mmengine.fileio import load
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    results = load(dump_file)[:num_show]
    gt = COCO(ann_file)
    cat_ids = gt.getCatIds()
    paths, panels = [], []
    for res in results:
        img = cv2.imread(res['img_path'])
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[res['img_id']]))
        g_boxes = [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                    a['bbox'][1] + a['bbox'][3]] for a in anns]
        g_labels = [cat_ids.index(a['category_id']) for a in anns]
        g_masks = [gt.annToMask(a) for a in anns]
        pred = res['pred_instances']
        keep = (pred['scores'] >= score_thr).numpy()
        p_masks = None
        if 'masks' in pred:
            p_masks = [mask_utils.decode(m) for m, k in
                       zip(pred['masks'], keep) if k]
        left = _draw_instances(img, g_boxes, g_labels, g_masks, classes)
        right = _draw_instances(
            img, pred['bboxes'].numpy()[keep], pred['labels'].numpy()[keep],
            p_masks, classes, pred['scores'].numpy()[keep])
        panel = _panel(left, right, ('ground truth',
                                     f'prediction (score >= {score_thr})'))
        path = osp.join(out_dir, osp.splitext(osp.basename(
            res['img_path']))[0] + '.png')
        cv2.imwrite(path, panel)
        paths.append(path)
        panels.append(panel)
    return paths, panels


def _colourise(label, scale=3):
    import cv2
    import numpy as np
    lut = np.zeros((256, 3), np.uint8)
    lut[0] = (40, 40, 40)  # background
    for k in range(len(_PALETTE_RGB)):
        lut[k + 1] = _bgr(k)
    lut[255] = (255, 255, 255)  # ignored
    return cv2.resize(lut[label], None, fx=scale, fy=scale,
                      interpolation=cv2.INTER_NEAREST)


def draw_seg(pred_dir, img_dir, seg_dir, out_dir, num_show):
    import cv2
    import numpy as np
    names = sorted(os.listdir(pred_dir))[:num_show]
    paths, panels = [], []
    for name in names:
        stem = osp.splitext(name)[0]
        img = cv2.imread(osp.join(img_dir, stem + '.jpg'))
        gt = cv2.imread(osp.join(seg_dir, stem + '.png'), cv2.IMREAD_UNCHANGED)
        pred = cv2.imread(osp.join(pred_dir, name), cv2.IMREAD_UNCHANGED)
        big = cv2.resize(img, None, fx=3, fy=3,
                         interpolation=cv2.INTER_NEAREST)
        left = np.concatenate([big, _colourise(gt)], 1)
        right = _colourise(pred)
        panel = _panel(left, right, ('image | ground truth', 'prediction'))
        path = osp.join(out_dir, stem + '.png')
        cv2.imwrite(path, panel)
        paths.append(path)
        panels.append(panel)
    return paths, panels


def draw_cls(dump_file, out_dir, classes, num_show):
    import cv2
    import numpy as np
    from mmengine.fileio import load
    results = load(dump_file)
    # a few of each class, in dataset order
    picked, per_class = [], {}
    for res in results:
        gt = int(np.asarray(res['gt_label']).ravel()[0])
        if per_class.get(gt, 0) < max(1, num_show // len(classes) + 1):
            per_class[gt] = per_class.get(gt, 0) + 1
            picked.append(res)
    rest = [r for r in results if not any(r is p for p in picked)]
    picked = (picked + rest)[:num_show]
    paths, panels = [], []
    for res in picked:
        gt = int(np.asarray(res['gt_label']).ravel()[0])
        pred = int(np.asarray(res['pred_label']).ravel()[0])
        score = float(np.asarray(res['pred_score'])[pred])
        img = cv2.imread(res['img_path'])
        big = cv2.resize(img, None, fx=2, fy=2,
                         interpolation=cv2.INTER_LINEAR)
        colour = (60, 160, 60) if pred == gt else (40, 40, 220)
        bar = np.full((40, big.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, f'true: {classes[gt]}', (4, 15),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(bar, f'pred: {classes[pred]} {score:.2f}', (4, 33),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        panel = np.concatenate([bar, big], 0)
        stem = (classes[gt] + '_' +
                osp.splitext(osp.basename(res['img_path']))[0])
        path = osp.join(out_dir, stem + '.png')
        cv2.imwrite(path, panel)
        paths.append(path)
        panels.append(panel)
    return paths, panels


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------
def _load_tool(name):
    """tools/<name>.py as a module (not importable by name: `test` would
    be Python's own package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        f'fcvit_mm_tools_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _final_checkpoint(work_dir):
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
    ckpts = sorted(glob.glob(osp.join(work_dir, 'iter_*.pth')),
                   key=lambda p: int(p.rsplit('_', 1)[1][:-4]))
    if not ckpts:
        raise RuntimeError(f'training left no checkpoint in {work_dir!r}')
    return ckpts[-1]


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    import fcvit_mm  # noqa: F401
    from fcvit_mm.datasets import SHAPES_CLASSES, make_shapes_dataset
    train_tool = _load_tool('train')
    test_tool = _load_tool('test')

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

    # 2. train with tools/train.py
    cfg, cfg_path = build_config(args, task, data['root'], work_dir)
    print(f'[demo] training {cfg_path} for {cfg.train_cfg.max_iters} '
          f'iterations, validating every {cfg.train_cfg.val_interval}',
          flush=True)
    t0 = time.time()
    runner = train_tool.main([cfg_path, '--work-dir', work_dir])
    train_log_dir = runner.log_dir
    del runner
    t_train = time.time() - t0
    ckpt = _final_checkpoint(work_dir)

    # 3. evaluate the final checkpoint with tools/test.py
    t0 = time.time()
    out = (osp.join(work_dir, 'test_pred_maps') if task == 'seg' else
           osp.join(work_dir, 'test_predictions.pkl'))
    metrics = test_tool.main([cfg_path, ckpt, '--work-dir', work_dir,
                              '--out', out])
    t_test = time.time() - t0

    # 4. pictures
    classes = tuple(cfg.get('classes', SHAPES_CLASSES))
    title = (f'FCViT-tiny {dict(det="Mask R-CNN", seg="Semantic FPN", cls="classifier")[task]}'
             f' on generated shapes')
    curves = plot_curves(train_log_dir, osp.join(work_dir, 'curves.png'),
                         spec['metrics'], title)
    pred_dir = osp.join(work_dir, 'predictions')
    os.makedirs(pred_dir, exist_ok=True)
    for old in glob.glob(osp.join(pred_dir, '*.png')):
        os.remove(old)
    if task == 'det':
        paths, panels = draw_det(out, data['val_ann_file'],
                                 data['val_img_dir'], pred_dir, classes,
                                 args.num_show)
    elif task == 'seg':
        paths, panels = draw_seg(out, data['val_img_dir'],
                                 data['val_seg_dir'], pred_dir,
                                 args.num_show)
    else:
        paths, panels = draw_cls(out, pred_dir, classes, args.num_show)
    overview = None
    if panels:
        overview = osp.join(work_dir, 'predictions.png')
        _save_grid(panels, overview, cols=2 if task != 'cls' else 4)

    # 5. summary
    final = {name: float(metrics[key]) for name, key in spec['metrics']
             if key in metrics}
    summary = dict(
        task=task, config=cfg_path, checkpoint=ckpt,
        log_dir=train_log_dir, curves=curves, predictions=paths,
        predictions_overview=overview, data_root=data['root'],
        max_iters=cfg.train_cfg.max_iters,
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
        f'{s["max_iters"]} iterations of batch {s["batch_size"]}; '
        f'evaluation {s["test_seconds"]:.0f} s)',
        f'  config       {s["config"]}',
        f'  checkpoint   {s["checkpoint"]}',
        f'  logs         {s["log_dir"]}',
        f'  curves       {s["curves"]}',
        f'  predictions  {s["predictions_overview"]} '
        f'(+ {len(s["predictions"])} in '
        f'{osp.dirname(s["predictions"][0]) if s["predictions"] else "-"})',
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
