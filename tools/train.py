#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Train a model from one of our configs (detection, segmentation or
classification): the library is chosen by the config's ``default_scope``
(mmdet, mmseg, mmpretrain) and the flags are those of that library's own
``tools/train.py``.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--no-validate] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}]
"""
import os.path as osp
import sys
import warnings

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
# before mmengine and mmcv import it (the others: run_tool)
warnings.filterwarnings('ignore', 'pkg_resources is deprecated')


def parse_args(argv=None):
    from fcvit_mm.engine import parse_tool_args, tool_parser
    parser = tool_parser('Train a model (fcvit_mm)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or (no value) from the '
        'latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate with the batch size')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate during training')
    parser.add_argument('--no-pin-memory', action='store_true',
                        help='dataloaders without pin_memory')
    parser.add_argument('--no-persistent-workers', action='store_true',
                        help='dataloaders without persistent_workers')
    return parse_tool_args(parser, argv)


def merge_args(cfg, args):
    """Apply the command line to the config, as the mm libraries do."""
    from fcvit_mm.engine import apply_tool_args
    from mmengine.config import ConfigDict
    apply_tool_args(cfg, args)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print('AMP training is already enabled in the config.')
        else:
            if wrapper != 'OptimWrapper':
                raise ValueError(f'--amp needs an OptimWrapper, the config '
                                 f'has {wrapper}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in \
                cfg.auto_scale_lr:
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr with '
                               'base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader:
            continue
        if args.no_pin_memory:
            loader['pin_memory'] = False
        if args.no_persistent_workers:
            loader['persistent_workers'] = False
    cfg.setdefault('env_cfg', ConfigDict())
    return cfg


def main(argv=None):
    args = parse_args(argv)
    import fcvit_mm  # noqa: F401  (registers FCViT, safe checkpoint types)
    from fcvit_mm.engine import (config_for_errors, fresh_visualizer_name,
                                 init_cpu_distributed, prepare_training,
                                 quiet_logged_deprecations)
    from fcvit_mm.utils.config import library_of, load_config
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    # options checked: one that names no key stops here, naming it
    cfg = load_config(args.config, args.cfg_options)
    with config_for_errors(cfg):  # a user error's fix names its data
        library_of(cfg)
        cfg = merge_args(cfg, args)
        init_cpu_distributed(cfg, args.launcher)
        fresh_visualizer_name(cfg)
        # annotation checks (the run's hooks come with the config, see
        # configs/_base_/fcvit_runtime.py)
        prepare_training(cfg)
        if cfg.default_scope == 'mmdet':
            from mmdet.utils import setup_cache_size_limit_of_dynamo
            setup_cache_size_limit_of_dynamo()
        if 'runner_type' not in cfg:
            runner = Runner.from_cfg(cfg)
        else:
            runner = RUNNERS.build(cfg)
        quiet_logged_deprecations(runner.logger)  # mmengine's, on itself
        runner.train()
    return runner


if __name__ == '__main__':
    from fcvit_mm.engine import run_tool
    run_tool(main)  # names a stalled rank; ends a distributed run cleanly
