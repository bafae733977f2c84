from .backbones import FCViT
from .checkpoint import (CheckpointError, convert_reference_state_dict,
                         extract_state_dict, load_pretrained, safe_load)

__all__ = ['CheckpointError', 'FCViT', 'convert_reference_state_dict',
           'extract_state_dict', 'load_pretrained', 'safe_load']
