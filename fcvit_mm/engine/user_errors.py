# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""How a run's user errors reach the user: once, short, with the fix.

A user error is one fixed in the command line, the config or the files: a
config, data or checkpoint file that is not there, a config key that
nothing takes, a checkpoint of another model. The tools (through
:func:`fcvit_mm.engine.run_tool`) print its message (:func:`user_error`:
the cause, then the fix) once, from rank 0, and exit with status 1,
without a traceback; under ``tools/dist_train.sh`` / ``dist_test.sh`` the
ranks leave the message to the launcher (``tools/dist_launch.py``), which
prints it instead of torchrun's failure report. ``--debug`` of the tools,
or ``FCVIT_MM_DEBUG=1``, shows the traceback as before. Any other error (a
bug) keeps its traceback.

What a message needs is passed to it: the exception, and the run's
config (for the fix of a missing data file), which an exception raised
inside :func:`config_for_errors` carries out of the tool's ``main``
(:func:`config_of_error`). A ``--cfg-options`` key that nothing takes is
one of these errors (:class:`~fcvit_mm.utils.config.ConfigKeyError`,
checked where configs are loaded: :mod:`fcvit_mm.utils.config`).
"""
import contextlib
import os
import sys
from typing import Iterator, List, Optional

from mmengine.config import Config

from fcvit_mm.utils.config import ConfigKeyError

#: exit status of a run that a user error stopped
USER_ERROR_EXIT = 1
#: set (not empty, not 0): a user error shows its traceback too
DEBUG_ENV = 'FCVIT_MM_DEBUG'
#: set by tools/dist_launch.py: the folder where ranks leave user errors
ERROR_DIR_ENV = 'FCVIT_MM_ERROR_DIR'
#: the attribute under which an exception carries the run's config
_CONFIG_ATTR = 'fcvit_mm_run_config'


def debug_requested() -> bool:
    """Whether a user error is to show its traceback too (``--debug`` of
    the tools, or ``FCVIT_MM_DEBUG=1``)."""
    return os.environ.get(DEBUG_ENV, '') not in ('', '0')


@contextlib.contextmanager
def config_for_errors(cfg: Config) -> Iterator[None]:
    """An exception raised inside carries ``cfg``, the run's config, to
    whoever reports it (:func:`config_of_error`)."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, _CONFIG_ATTR, None) is None:
            setattr(exc, _CONFIG_ATTR, cfg)
        raise


def config_of_error(exc: BaseException) -> Optional[Config]:
    """The run's config that ``exc`` carries (:func:`config_for_errors`),
    or None."""
    return getattr(exc, _CONFIG_ATTR, None)


# --------------------------------------------------------------------------
# the message
# --------------------------------------------------------------------------
def _checkpoint_fix(text: str) -> str:
    if 'not found' in text:
        return ('give the path of an existing checkpoint (tools/test.py '
                'CONFIG CHECKPOINT; training: --resume CKPT or '
                '--cfg-options load_from=CKPT)')
    return ('use the checkpoint with the config it was trained with (the '
            'same model and variant), or the config that matches it')


def _short(text: str, lines: int = 6) -> str:
    """``text`` cut to its first ``lines`` lines (a list of mismatches)."""
    kept = text.splitlines()
    if len(kept) <= lines:
        return text
    return '\n'.join(kept[:lines] + [
        f'  ... ({len(kept) - lines} more lines: see --debug)'])


def data_fix(cfg: Optional[Config]) -> str:
    """Where the run's config ``cfg`` reads its data from, and the
    ``--cfg-options`` line that points it elsewhere: the ``data_root`` of
    each dataloader's dataset and the evaluators' annotation files under
    those roots (a config's ``data_root`` variable is resolved when the
    config is read, so each key is set on its own)."""
    roots = {}
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = (cfg.get(key) or {}).get('dataset') if cfg else None
        where = f'{key}.dataset'
        while isinstance(ds, dict) and isinstance(ds.get('dataset'), dict):
            ds = ds['dataset']  # a dataset wrapper (RepeatDataset, ...)
            where += '.dataset'
        if isinstance(ds, dict) and isinstance(ds.get('data_root'), str):
            roots[f'{where}.data_root'] = ds['data_root']
    if not roots:
        return 'check the path in the config or on the command line'
    options = [f'{k}=/path/to/data/' for k in roots]
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        ann = evaluator.get('ann_file') if isinstance(evaluator,
                                                       dict) else None
        root = next((r for r in roots.values()
                     if r and isinstance(ann, str) and ann.startswith(r)),
                    None)
        if root is not None:
            rest = ann[len(root):].lstrip('/')
            options.append(f'{key}.ann_file=/path/to/data/{rest}')
    where = ', '.join(f'{k}={v!r}' for k, v in roots.items())
    return (f'the config reads its data from {where}; point it at your '
            f'data with:\n  --cfg-options {" ".join(options)}')


def user_error(exc: BaseException,
               cfg: Optional[Config] = None) -> Optional[str]:
    """The short message (the cause, then the fix) for a user error (see
    the module doc) of a run of ``cfg`` (None: before the config was
    read), or None for any other error."""
    from fcvit_mm.models.checkpoint import CheckpointError
    from .data_checks import DatasetError
    text = str(exc).strip()
    if isinstance(exc, ConfigKeyError):
        return f'{text}\nfix: correct the key (or leave it out)'
    if isinstance(exc, DatasetError):
        if text.startswith('annotation file not found'):
            return f'{text}\nfix: {data_fix(cfg)}'
        return text  # names the file and the config key
    if isinstance(exc, CheckpointError) or (
            isinstance(exc, FileNotFoundError) and
            text.startswith('checkpoint file not found')):
        return f'{_short(text)}\nfix: {_checkpoint_fix(text)}'
    if isinstance(exc, FileNotFoundError):
        if text.startswith('config file not found'):
            return f'{text}\nfix: give the path of a config file, e.g. ' \
                'configs/detection/maskrcnn_fcvit_b12.py'
        return f'file not found: {text}\nfix: {data_fix(cfg)}'
    if isinstance(exc, TypeError) and 'unexpected keyword argument' in text:
        # mmengine's registry names the class: a key of the config file
        # that the class does not take
        return (f'a config key that nothing takes: {text}\nfix: correct '
                f'the key in the config (or leave it out)')
    if isinstance(exc, KeyError) and 'registry' in text:
        return (f'{text.strip(chr(34) + chr(39))}\nfix: correct the "type" '
                f'in the config, or import the module that registers it '
                f'(custom_imports)')
    return None


def format_user_error(message: str) -> str:
    """The lines the user sees for ``message``."""
    return (f'error: {message}\n(the traceback: add --debug, or set '
            f'{DEBUG_ENV}=1)')


def report_user_error(message: str) -> None:
    """Tell the user ``message`` once: from rank 0 (or the only process);
    under ``tools/dist_launch.py`` every rank leaves it to the launcher,
    which prints the first rank's once torchrun has ended."""
    rank = int(os.environ.get('RANK', '0'))
    folder = os.environ.get(ERROR_DIR_ENV)
    if folder and os.path.isdir(folder):
        with open(os.path.join(folder, f'rank{rank}.txt'), 'w') as f:
            f.write(message)
    elif rank == 0:
        print(format_user_error(message), file=sys.stderr, flush=True)


__all__: List[str] = [
    'config_for_errors', 'config_of_error', 'data_fix', 'debug_requested',
    'format_user_error', 'report_user_error', 'user_error']
