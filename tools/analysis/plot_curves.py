#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Training loss and validation metrics of a run, as a PNG.

    python tools/analysis/plot_curves.py WORK_DIR [--out FILE.png]
        [--metrics KEY ...] [--title TEXT]

Reads mmengine's ``scalars.json`` of the latest training run in
``WORK_DIR`` (``<timestamp>/vis_data/scalars.json``; a file path works
too) and draws the training loss and its parts against the iteration, and
the validation metrics (all of them, or ``--metrics``) against the
iteration or epoch. Default output: ``WORK_DIR/curves.png``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from tools.analysis.lib.curves import find_scalars, plot_curves  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Training loss and validation metrics of a run (PNG)')
    p.add_argument('work_dir', help='work dir of a run, or a scalars.json')
    p.add_argument('--out', help='output PNG (default WORK_DIR/curves.png)')
    p.add_argument('--metrics', nargs='+',
                   help='validation metrics to draw (default: all)')
    p.add_argument('--title', help='figure title')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if osp.isfile(args.work_dir):
        path, work_dir = args.work_dir, osp.dirname(args.work_dir)
    else:
        path, work_dir = find_scalars(args.work_dir), args.work_dir
    out = args.out or osp.join(work_dir, 'curves.png')
    drawn = plot_curves(path, out, args.metrics, args.title)
    print(f'wrote {out}: {drawn["num_train"]} training records '
          f'({", ".join(drawn["losses"])}), {drawn["num_val"]} validations '
          f'({", ".join(drawn["metrics"]) or "none"})')
    return dict(drawn, out=out, scalars=path)


if __name__ == '__main__':
    main()
