# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Deployment: the models of this project's configs to ONNX, run by ONNX
Runtime or OpenVINO with the libraries' own pre- and post-processing.

Needs the ``deploy`` extra (``pip install -e .[deploy]``: onnx,
onnxruntime, onnxscript), and for OpenVINO the ``openvino`` extra;
training needs neither. See docs/deployment.md.
"""
from .export import (CheckpointMismatchError, check_opset, export_model,
                     load_weights)
from .runtime import init_onnx_model, read_manifest

__all__ = ['CheckpointMismatchError', 'check_opset', 'export_model',
           'init_onnx_model', 'load_weights', 'read_manifest']
