# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The run layer: what keeps a training or test run honest, by concern.

===================  =====================================================
module               concern
===================  =====================================================
``checkpoints``      atomic saving (``SafeCheckpointHook``, the
                     ``'atomic_local'`` file backend)
``resume``           which checkpoint ``--resume`` continues from
                     (``SafeResumeHook``)
``determinism``      exact resume (``RandomStateHook``)
``finite_loss``      a stop at the first non-finite loss (``FiniteLossHook``)
``data_checks``      annotation files checked before the run
``data_hooks``       data checked against the model as it loads
                     (``DataCheckHook``)
``workers``          no DataLoader worker left behind
                     (``DataLoaderWorkersHook``)
``mixed_precision``  ``--amp`` on the CPU: bf16 autocast, float32 weights
                     (``AmpOptimWrapper``, in mmengine's place)
``distributed``      CPU start-up, SyncBN, a clean end, timeouts named
``preflight``        what the tools do before building a runner
``tool_args``        the command line that the run tools share
``user_errors``      a user error told once, short, with its fix
``warning_filters``  third-party deprecation notices a run does not show
===================  =====================================================

Configs are loaded, their ``--cfg-options`` checked and their library told
in :mod:`fcvit_mm.utils.config`.

Importing this package registers every hook above in mmengine's root
``HOOKS`` registry and the CPU-capable ``AmpOptimWrapper`` in its
``OPTIM_WRAPPERS`` (the imports below); ``configs/_base_/fcvit_runtime.py``
puts the hooks in every run.
"""
from . import checkpoints, determinism, finite_loss  # noqa: F401 (registers)
from . import data_hooks, resume, workers  # noqa: F401 (registers)
from . import mixed_precision  # noqa: F401 (registers)
from .distributed import init_cpu_distributed, run_tool, shutdown_distributed
from .preflight import (fresh_visualizer_name, prepare_testing,
                        prepare_training)
from .tool_args import apply_tool_args, parse_tool_args, tool_parser
from .user_errors import config_for_errors
from .warning_filters import quiet_logged_deprecations

__all__ = [
    'apply_tool_args', 'config_for_errors', 'fresh_visualizer_name',
    'init_cpu_distributed', 'parse_tool_args', 'prepare_testing',
    'prepare_training', 'quiet_logged_deprecations', 'run_tool',
    'shutdown_distributed', 'tool_parser'
]
