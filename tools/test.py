#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Evaluate a checkpoint on one of our configs (detection, segmentation or
classification), with the flags of the config's library's own
``tools/test.py`` (mmdet, mmseg or mmpretrain, from ``default_scope``).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--show] [--show-dir DIR] [--wait-time S] [--tta]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import os.path as osp
import sys
import warnings

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
# before mmengine and mmcv import it (the others: run_tool)
warnings.filterwarnings('ignore', 'pkg_resources is deprecated')


def parse_args(argv=None):
    from fcvit_mm.engine import parse_tool_args, tool_parser
    parser = tool_parser('Test a model (fcvit_mm)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to this file '
                        '(mmseg: a directory of prediction maps)')
    parser.add_argument('--show', action='store_true', help='show results')
    parser.add_argument('--show-dir', help='dir to save drawn results (mmdet, '
                        'mmpretrain: under the run\'s timestamp folder of '
                        'the work dir; mmseg: as given)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true',
                        help='test time augmentation (needs tta_model and '
                        'tta_pipeline in the config)')
    return parse_tool_args(parser, argv)


def trigger_visualization_hook(cfg, args):
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise RuntimeError('--show/--show-dir need a "visualization" hook in '
                           'default_hooks')
    vis = hooks['visualization']
    if cfg.default_scope == 'mmpretrain':
        vis['enable'] = True
        vis['show'] = args.show
        vis['wait_time'] = args.wait_time
        if args.show_dir:
            vis['out_dir'] = args.show_dir
    else:  # mmdet, mmseg
        vis['draw'] = True
        vis['show'] = args.show
        vis['wait_time'] = args.wait_time
        if args.show_dir:
            if cfg.default_scope == 'mmdet':
                vis['test_out_dir'] = args.show_dir
            else:
                cfg.visualizer['save_dir'] = args.show_dir
                vis['interval'] = 1
    return cfg


def main(argv=None):
    args = parse_args(argv)
    import fcvit_mm  # noqa: F401  (registers FCViT, safe checkpoint types)
    from fcvit_mm.engine import (apply_tool_args, config_for_errors,
                                 fresh_visualizer_name, init_cpu_distributed,
                                 prepare_testing)
    from fcvit_mm.models.checkpoint import safe_url
    from fcvit_mm.utils.config import library_of, load_config

    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise FileNotFoundError(
            f'checkpoint file not found: {args.checkpoint!r}')
    # options checked: one that names no key stops here, naming it
    cfg = load_config(args.config, args.cfg_options)
    with config_for_errors(cfg):  # a user error's fix names its data
        scope = library_of(cfg)
        apply_tool_args(cfg, args)
        # read once, by mmengine, through the safe loader (errors name the
        # file)
        cfg.load_from = safe_url(args.checkpoint)
        if args.show or args.show_dir:
            cfg = trigger_visualization_hook(cfg, args)
        if args.tta:
            if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
                raise RuntimeError('--tta needs tta_model and tta_pipeline '
                                   'in the config')
            cfg.tta_model.module = cfg.model
            cfg.model = cfg.tta_model
            cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        if args.out and scope == 'mmseg':
            cfg.test_evaluator['output_dir'] = args.out
            cfg.test_evaluator['keep_results'] = True
        init_cpu_distributed(cfg, args.launcher)
        fresh_visualizer_name(cfg)
        prepare_testing(cfg)  # annotation files
        return _run_test(cfg, args, scope)


def _run_test(cfg, args, scope):
    """Build the runner of ``cfg`` and test (the predictions dumped to
    ``--out`` for mmdet and mmpretrain): the metrics."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from fcvit_mm.engine import quiet_logged_deprecations
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    quiet_logged_deprecations(runner.logger)  # mmengine's, on itself
    if args.out and scope != 'mmseg':
        if scope == 'mmdet':
            from mmdet.evaluation import DumpDetResults
            dumper = DumpDetResults(out_file_path=args.out)
        else:
            from mmengine.evaluator import DumpResults
            dumper = DumpResults(out_file_path=args.out)
        runner.test_evaluator.metrics.append(dumper)
    return runner.test()


if __name__ == '__main__':
    from fcvit_mm.engine import run_tool
    run_tool(main)  # names a stalled rank; ends a distributed run cleanly
