from .backbones import FCViT
from .utils import (convert_reference_state_dict, extract_state_dict,
                    load_pretrained)

__all__ = ['FCViT', 'convert_reference_state_dict', 'extract_state_dict',
           'load_pretrained']
