from .dist_errors import run_tool
from .launch import (TASK_LIBRARIES, fresh_visualizer_name,
                     init_cpu_distributed, load_config, shutdown_distributed,
                     task_of)
from .preflight import prepare_testing, prepare_training

__all__ = [
    'TASK_LIBRARIES', 'fresh_visualizer_name',
    'init_cpu_distributed', 'load_config', 'prepare_testing',
    'prepare_training', 'run_tool', 'shutdown_distributed', 'task_of'
]
