# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Training curves from mmengine's ``scalars.json`` (one JSON record per
line: training records carry ``loss``, validation records the metrics),
drawn with matplotlib: the training loss and its parts on the left, the
validation metrics on the right."""
import glob
import json
import os.path as osp
from typing import List, Optional, Sequence, Tuple

#: keys of a validation record that are not metrics
NOT_METRICS = ('step', 'iter', 'epoch', 'time', 'data_time', 'lr',
               'memory')


def find_scalars(work_dir: str) -> str:
    """The ``scalars.json`` of the latest run in ``work_dir`` that trained
    (``<timestamp>/vis_data/scalars.json`` with a ``loss`` record)."""
    if not osp.isdir(work_dir):
        raise FileNotFoundError(f'work dir not found: {work_dir!r}')
    paths = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')), reverse=True)
    for path in paths:
        train, _ = read_scalars(path)
        if train:
            return path
    raise FileNotFoundError(
        f'no training log in {work_dir!r}: expected '
        '<timestamp>/vis_data/scalars.json with training losses (found '
        f'{len(paths)} scalars.json without)')


def read_scalars(path: str) -> Tuple[List[dict], List[dict]]:
    """(training records, validation records) of a ``scalars.json``."""
    train, val = [], []
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                (train if 'loss' in rec else val).append(rec)
    return train, val


def metric_keys(val: Sequence[dict]) -> List[str]:
    """The numeric keys of the validation records, in first-seen order."""
    keys = {}
    for rec in val:
        for k, v in rec.items():
            if k not in NOT_METRICS and isinstance(v, (int, float)):
                keys.setdefault(k)
    return list(keys)


def plot_curves(path: str, out_file: str,
                metrics: Optional[Sequence[str]] = None,
                title: Optional[str] = None) -> dict:
    """Draw the curves of ``scalars.json`` ``path`` to ``out_file`` (PNG).

    Returns what was drawn: ``losses`` and ``metrics`` (keys), and the
    number of training and validation records.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    train, val = read_scalars(path)
    metrics = list(metrics) if metrics else metric_keys(val)
    missing = [k for k in metrics if not any(k in r for r in val)]
    if missing:
        raise KeyError(f'metrics {missing} are not in {path!r}; it has '
                       f'{metric_keys(val)}')
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r.get('iter', r.get('step')) for r in train]
    losses = ['loss'] + sorted(k for k in (train[-1] if train else {})
                               if k != 'loss' and 'loss' in k)
    for key in losses if train else []:
        ax1.plot(steps, [r.get(key, float('nan')) for r in train],
                 lw=2 if key == 'loss' else 1, label=key)
    by_epoch = any('epoch' in r for r in train)
    for key in metrics:
        pts = [(r['step'], r[key]) for r in val if key in r]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], 'o-', label=key)
    for ax, name, xlabel in (
            (ax1, 'training loss', 'iteration'),
            (ax2, 'validation', 'epoch' if by_epoch else 'iteration')):
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title or path)
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)
    return dict(losses=losses if train else [], metrics=metrics,
                num_train=len(train), num_val=len(val))
