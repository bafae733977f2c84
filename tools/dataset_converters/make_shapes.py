#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Generate the synthetic-shapes dataset (circle, square, triangle) in the
COCO, ADE20K and/or ImageNet layouts.

    python tools/dataset_converters/make_shapes.py data/shapes \
        --format coco ade20k imagenet --num-train 400 --num-val 100

With several formats each goes to ``ROOT/<format>``; with one format it goes
to ``ROOT`` itself unless ``--subdir`` is given. The same arguments give the
same files; an existing dataset made with the same arguments is reused.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from fcvit_mm.datasets.shapes import FORMATS, make_shapes_dataset  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('root', help='output folder')
    p.add_argument('--format', nargs='+', default=['coco'], choices=FORMATS,
                   help='dataset layout(s) to write')
    p.add_argument('--subdir', action='store_true',
                   help='write ROOT/<format> even for a single format')
    p.add_argument('--num-train', type=int, default=200)
    p.add_argument('--num-val', type=int, default=50)
    p.add_argument('--img-size', type=int, nargs='+', default=[128],
                   help='SIZE or H W')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--num-objects', type=int, nargs=2, default=[1, 4],
                   metavar=('MIN', 'MAX'))
    p.add_argument('--size-range', type=float, nargs=2, default=[0.2, 0.5],
                   metavar=('MIN', 'MAX'),
                   help='shape diameter as a fraction of the image side')
    p.add_argument('--min-visible', type=float, default=0.6)
    p.add_argument('--noise', type=float, default=8.0)
    p.add_argument('--no-rotate', action='store_true')
    p.add_argument('--overwrite', action='store_true')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if len(args.img_size) not in (1, 2):
        raise SystemExit('--img-size takes SIZE or H W')
    img_size = (args.img_size * 2)[:2]
    results = []
    for fmt in dict.fromkeys(args.format):
        root = (osp.join(args.root, fmt)
                if len(args.format) > 1 or args.subdir else args.root)
        res = make_shapes_dataset(
            root, fmt, num_train=args.num_train, num_val=args.num_val,
            img_size=img_size, seed=args.seed,
            num_objects=tuple(args.num_objects),
            size_range=tuple(args.size_range), min_visible=args.min_visible,
            noise=args.noise, rotate=not args.no_rotate,
            overwrite=args.overwrite)
        state = 'written' if res['generated'] else 'up to date'
        print(f'[make_shapes] {fmt}: {res["num_train"]} train + '
              f'{res["num_val"]} val images in {res["root"]} ({state})')
        results.append(res)
    return results


if __name__ == '__main__':
    main()
