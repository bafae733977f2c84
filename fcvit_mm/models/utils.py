# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Checkpoint helpers of the model, re-exported from the one checkpoint
module, :mod:`fcvit_mm.utils.checkpoint` (kept for existing imports)."""
from fcvit_mm.utils.checkpoint import (backbone_state_dict_from,
                                       convert_reference_state_dict,
                                       extract_state_dict,
                                       is_reference_layout, load_pretrained)

__all__ = ['backbone_state_dict_from', 'convert_reference_state_dict',
           'extract_state_dict', 'is_reference_layout', 'load_pretrained']
