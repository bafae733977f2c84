from .launch import (TASK_LIBRARIES, init_cpu_distributed, load_config,
                     task_of)
from .pretrained import drop_empty_pretrained

__all__ = [
    'TASK_LIBRARIES', 'drop_empty_pretrained', 'init_cpu_distributed',
    'load_config', 'task_of'
]
