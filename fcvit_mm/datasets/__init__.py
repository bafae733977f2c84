# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Synthetic datasets for tests and the demo (numpy + OpenCV only)."""
from .shapes import (FORMATS, SHAPES_CLASSES, SHAPES_PALETTE, draw_scene,
                     make_shapes_dataset)

__all__ = ['FORMATS', 'SHAPES_CLASSES', 'SHAPES_PALETTE', 'draw_scene',
           'make_shapes_dataset']
