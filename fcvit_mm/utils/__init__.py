from .checkpoint import (CheckpointError, register_safe_globals, safe_globals,
                         safe_load)

__all__ = ['CheckpointError', 'register_safe_globals', 'safe_globals',
           'safe_load']
