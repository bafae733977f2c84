#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""torchrun (``torch.distributed.run``, same arguments) for
``dist_train.sh`` / ``dist_test.sh``, with a short end for a user error.

A rank stopped by a user error (a missing data, config or checkpoint file,
a config key that nothing takes, a checkpoint of another model; see
``fcvit_mm.engine.user_errors``) leaves its message in a
folder this launcher gives it (``FCVIT_MM_ERROR_DIR``) and exits with
status 1. Once torchrun is done, the message of the first such rank is
printed once, and the launcher exits with status 1, without torchrun's
failure report or its log lines about the other ranks. Any other failure
(a bug, a killed or stalled rank) ends as torchrun ends it: its report,
every rank's traceback. ``--debug`` of the tools (or ``FCVIT_MM_DEBUG=1``)
makes the ranks show their tracebacks, and so torchrun its report.
"""
import logging
import os
import os.path as osp
import shutil
import sys
import tempfile
import warnings

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))


class QuietAfterUserError(logging.Filter):
    """Drops torchrun's log records (torch's own stderr handlers) once a
    rank has left a user error (it leaves the message before it exits, so
    before torchrun notices)."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def filter(self, record):
        return not os.listdir(self.folder)


def first_message(folder):
    """The message of the lowest rank that left one, or None."""
    names = sorted(os.listdir(folder),
                   key=lambda n: int(n[len('rank'):-len('.txt')]))
    if not names:
        return None
    with open(osp.join(folder, names[0])) as f:
        return f.read()


def main(argv=None):
    # mmengine (imported below) imports pkg_resources, deprecated
    warnings.filterwarnings('ignore', 'pkg_resources is deprecated')
    from torch.distributed.elastic.multiprocessing.errors import \
        ChildFailedError
    from torch.distributed.run import parse_args, run

    from fcvit_mm.engine.user_errors import (ERROR_DIR_ENV, USER_ERROR_EXIT,
                                             format_user_error)
    # torchrun's and mmengine's defaults (one thread per rank), set here so
    # that neither announces them in every rank
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    os.environ.setdefault('MKL_NUM_THREADS', '1')
    args = parse_args(sys.argv[1:] if argv is None else argv)
    folder = tempfile.mkdtemp(prefix='fcvit_mm_errors_')
    os.environ[ERROR_DIR_ENV] = folder
    quiet = QuietAfterUserError(folder)
    for logger in (logging.getLogger(name) for name in
                   ['', *logging.Logger.manager.loggerDict]):
        for handler in getattr(logger, 'handlers', ()):  # torch's, stderr
            handler.addFilter(quiet)
    try:
        try:
            run(args)
        except ChildFailedError:
            message = first_message(folder)
            if message is None:
                raise
            print(format_user_error(message), file=sys.stderr, flush=True)
            return USER_ERROR_EXIT
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
