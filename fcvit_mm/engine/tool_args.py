# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The command line that ``tools/train.py`` and ``tools/test.py`` share:
the config and ``--work-dir`` first (:func:`tool_parser`), then each
tool's own arguments, then ``--cfg-options``, ``--launcher``, ``--debug``
and the launchers' ``--local_rank`` (:func:`parse_tool_args`); the work
dir and the launcher are set in the config by :func:`apply_tool_args`.
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

from mmengine.config import Config, DictAction

from .user_errors import DEBUG_ENV

__all__ = ['apply_tool_args', 'parse_tool_args', 'tool_parser']


def tool_parser(description: str) -> argparse.ArgumentParser:
    """A run tool's parser with the arguments that come first: the config
    and ``--work-dir``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='the dir to save logs, models '
                        'and metrics')
    return parser


def parse_tool_args(parser: argparse.ArgumentParser,
                    argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Add the shared arguments to a tool's ``parser`` (a
    :func:`tool_parser`, after the tool's own arguments) and parse
    ``argv``. ``--debug`` sets ``FCVIT_MM_DEBUG=1`` (read by
    :func:`fcvit_mm.engine.run_tool`); ``LOCAL_RANK`` is set from
    ``--local_rank`` where the launcher did not set it."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value (xxx=yyy format)')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument(
        '--debug', action='store_true',
        help='show the traceback of a user error (a missing file, a '
        'config key that does not exist, ...), not only its message; the '
        f'same as {DEBUG_ENV}=1')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.debug:
        os.environ[DEBUG_ENV] = '1'
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def apply_tool_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Set the config's ``launcher`` and ``work_dir`` from the command line
    (``--work-dir``; without it, the config's own or
    ``./work_dirs/<config name>``), as the libraries' tools do."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg
