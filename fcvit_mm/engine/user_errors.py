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

``--cfg-options`` keys are checked before they are merged
(:func:`merge_cfg_options`): one that names no key of the config, or that
the class it configures does not take, stops the run before the runner
logs anything.
"""
import copy
import difflib
import inspect
import logging
import os
import re
import sys
from typing import List, Optional

from mmengine.config import Config

from fcvit_mm.utils.config import known_config_keys

#: exit status of a run that a user error stopped
USER_ERROR_EXIT = 1
#: set (not empty, not 0): a user error shows its traceback too
DEBUG_ENV = 'FCVIT_MM_DEBUG'
#: set by tools/dist_launch.py: the folder where ranks leave user errors
ERROR_DIR_ENV = 'FCVIT_MM_ERROR_DIR'
#: the run's config, for the fix of a missing data file
_run = dict(cfg=None)

#: third-party deprecation notices a run of our tools does not show (the
#: libraries' business, not the user's; pytest.ini lists the same)
THIRD_PARTY_WARNINGS = (
    'pkg_resources is deprecated',  # setuptools >= 80, on mmengine, mmcv
    '`reduce_zero_label` will be deprecated',  # mmseg, on its own pipeline
    '``build_loss`` would be deprecated',  # mmseg, on its own heads
    'Default ``avg_non_ignore`` is False',  # mmseg's CrossEntropyLoss
    # torch >= 2.12 on DDP's argument, which mmengine's wrapper passes
    '`broadcast_buffers` is deprecated',
)


class ConfigKeyError(KeyError):
    """A ``--cfg-options`` key that the config does not have and nothing
    takes."""

    def __str__(self):
        return str(self.args[0])


def quiet_third_party_warnings() -> None:
    """Hide :data:`THIRD_PARTY_WARNINGS` in this process (the tools' entry
    points; the first is hidden before anything imports mmengine)."""
    import warnings
    for message in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings('ignore', re.escape(message))


#: deprecation notices that mmengine logs (not warns) in every training run
#: of its own, through its CheckpointHook
LOGGED_DEPRECATIONS = (
    '"FileClient" will be deprecated in future',
    '"HardDiskBackend" is the alias of "LocalBackend"',
)


class _DropDeprecations(logging.Filter):
    def filter(self, record):
        text = record.getMessage()
        return not any(m in text for m in LOGGED_DEPRECATIONS)


def quiet_logged_deprecations(logger: logging.Logger) -> None:
    """Drop :data:`LOGGED_DEPRECATIONS` from a run's logger (the tools do,
    once they have built the runner)."""
    if not any(isinstance(f, _DropDeprecations) for f in logger.filters):
        logger.addFilter(_DropDeprecations())


def debug_requested() -> bool:
    """Whether a user error is to show its traceback too (``--debug`` of
    the tools, or ``FCVIT_MM_DEBUG=1``)."""
    return os.environ.get(DEBUG_ENV, '') not in ('', '0')


# --------------------------------------------------------------------------
# --cfg-options
# --------------------------------------------------------------------------
def _registered_class(type_, scope: Optional[str]):
    """The class a ``type`` names, from mmengine's registries (with the
    config's scope), or None."""
    if inspect.isclass(type_):
        return type_
    if not isinstance(type_, str):
        return None
    from mmengine import registry
    from mmengine.registry import DefaultScope
    roots = [getattr(registry, name) for name in dir(registry)
             if isinstance(getattr(registry, name), registry.Registry)]
    context = DefaultScope.overwrite_default_scope(scope) if scope else None
    try:
        if context is not None:
            context.__enter__()
        for root in roots:
            try:
                found = root.get(type_)
            except Exception:  # a registry that cannot import its modules
                found = None
            if inspect.isclass(found):
                return found
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    return None


def _takes(cls, key: str) -> bool:
    params = inspect.signature(cls.__init__).parameters.values()
    return any(p.kind is p.VAR_KEYWORD or p.name == key for p in params)


def _did_you_mean(key, keys) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in keys], n=1,
                                      cutoff=0.6)
    return f'; did you mean {close[0]!r}?' if close else ''


def _unknown_key(node: dict, key: str, path: List[str], type_,
                 scope: Optional[str]) -> Optional[str]:
    """Why ``key``, which ``node`` (at ``path``) does not have, cannot be
    added there, or None when it can: the class that ``node`` configures
    (``type_``, as the options leave it) takes no such argument, or (no
    class to ask) the key is a near miss of one ``node`` has."""
    where = '.'.join(path) or 'the config'
    cls = _registered_class(type_, scope) if path else None
    if cls is not None:
        if _takes(cls, key):
            return None
        return (f'{where} (type={cls.__name__}) takes no {key!r}'
                f'{_did_you_mean(key, node)}')
    known = list(node) if path else list(node) + known_config_keys()
    if key in known:
        return None
    close = difflib.get_close_matches(key, [str(k) for k in known], n=1,
                                      cutoff=0.8)
    if close:
        return f'{where} has no key {key!r}; did you mean {close[0]!r}?'
    return None


def check_cfg_options(cfg: Config, options: Optional[dict]) -> None:
    """Raise :class:`ConfigKeyError` for a ``--cfg-options`` key that the
    config does not have where it cannot be new either: the class its
    parent configures (``type``) takes no such argument, or, with no class
    to ask, it is a near miss of a key the parent has (``datset`` for
    ``dataset``). A list index must exist."""
    scope = cfg.get('default_scope')
    merged = copy.deepcopy(cfg)  # the types as the options leave them
    merged.merge_from_dict(options or {})
    for option in options or {}:
        node, path, mnode = dict(cfg.items()), [], dict(merged.items())
        for part in option.split('.'):
            if isinstance(node, (list, tuple)) and part.isdigit():
                if int(part) >= len(node):
                    raise ConfigKeyError(
                        f'--cfg-options {option}: {".".join(path)} has '
                        f'{len(node)} items, no item {part}')
                node, mnode = node[int(part)], mnode[int(part)]
            elif isinstance(node, dict) and part in node:
                node, mnode = node[part], mnode[part]
            else:
                if isinstance(node, dict):
                    why = _unknown_key(node, part, path, mnode.get('type'),
                                       scope)
                    if why is not None:
                        raise ConfigKeyError(f'--cfg-options {option}: {why}')
                break  # a new key (and what it holds): nothing to compare
            path.append(part)


def merge_cfg_options(cfg: Config, options: Optional[dict]) -> Config:
    """:func:`check_cfg_options`, then merge them into ``cfg``; ``cfg`` is
    the run's config from then on (for :func:`data_fix`)."""
    _run['cfg'] = cfg
    if options:
        check_cfg_options(cfg, options)
        cfg.merge_from_dict(options)
    return cfg


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


def data_fix() -> str:
    """Where the run's config reads its data from, and the
    ``--cfg-options`` line that points it elsewhere: the ``data_root`` of
    each dataloader's dataset and the evaluators' annotation files under
    those roots (a config's ``data_root`` variable is resolved when the
    config is read, so each key is set on its own)."""
    cfg = _run['cfg']
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


def user_error(exc: BaseException) -> Optional[str]:
    """The short message (the cause, then the fix) for a user error (see
    the module doc), or None for any other error."""
    from fcvit_mm.models.checkpoint import CheckpointError
    from .data_checks import DatasetError
    text = str(exc).strip()
    if isinstance(exc, ConfigKeyError):
        return f'{text}\nfix: correct the key (or leave it out)'
    if isinstance(exc, DatasetError):
        if text.startswith('annotation file not found'):
            return f'{text}\nfix: {data_fix()}'
        return text  # names the file and the config key
    if isinstance(exc, CheckpointError) or (
            isinstance(exc, FileNotFoundError) and
            text.startswith('checkpoint file not found')):
        return f'{_short(text)}\nfix: {_checkpoint_fix(text)}'
    if isinstance(exc, FileNotFoundError):
        if text.startswith('config file not found'):
            return f'{text}\nfix: give the path of a config file, e.g. ' \
                'configs/detection/maskrcnn_fcvit_b12.py'
        return f'file not found: {text}\nfix: {data_fix()}'
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
    'ConfigKeyError', 'check_cfg_options', 'debug_requested',
    'format_user_error', 'merge_cfg_options', 'quiet_logged_deprecations',
    'quiet_third_party_warnings',
    'report_user_error', 'user_error']
