# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Synthetic data (no training job imports this).

:mod:`.shapes` generates the synthetic-shapes datasets of the tests and of
``tools/demo.py`` (command line: ``tools/dataset_converters/make_shapes.py``).
"""
from .shapes import FORMATS, SHAPES_CLASSES, draw_scene, make_shapes_dataset

__all__ = ['FORMATS', 'SHAPES_CLASSES', 'draw_scene', 'make_shapes_dataset']
