# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The run layer: what keeps a training or test run honest, by concern.

==================  =====================================================
module              concern
==================  =====================================================
``checkpoints``     atomic saving (``SafeCheckpointHook``, the
                    ``'atomic_local'`` file backend)
``resume``          which checkpoint ``--resume`` continues from
                    (``SafeResumeHook``)
``determinism``     exact resume (``RandomStateHook``)
``finite_loss``     a stop at the first non-finite loss (``FiniteLossHook``)
``data_checks``     annotation files checked before the run
``data_hooks``      data checked against the model as it loads
                    (``DataCheckHook``)
``workers``         no DataLoader worker left behind
                    (``DataLoaderWorkersHook``)
``distributed``     CPU start-up, SyncBN, a clean end, timeouts named
``preflight``       what the tools do before building a runner
``user_errors``     a user error told once, short, with its fix
==================  =====================================================

Importing this package registers every hook above in mmengine's root
``HOOKS`` registry (the imports below); ``configs/_base_/fcvit_runtime.py``
puts them in every run.
"""
from . import checkpoints, determinism, finite_loss  # noqa: F401 (registers)
from . import data_hooks, resume, workers  # noqa: F401 (registers)
from .distributed import init_cpu_distributed, run_tool, shutdown_distributed
from ..utils.config import TASK_LIBRARIES, load_config, task_of
from .preflight import (fresh_visualizer_name, prepare_testing,
                        prepare_training)
from .user_errors import merge_cfg_options

__all__ = [
    'TASK_LIBRARIES', 'fresh_visualizer_name', 'init_cpu_distributed',
    'load_config', 'merge_cfg_options', 'prepare_testing',
    'prepare_training', 'run_tool', 'shutdown_distributed', 'task_of'
]
