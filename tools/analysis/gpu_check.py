#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The GPU check: the backbone's CUDA tests and the benchmark table (FCViT
default / plain path vs ResNet-50, eager and compiled; Mask R-CNN and
Semantic FPN iterations), in bounded time, table printed last.

See :mod:`tools.analysis.lib.gpu_check` for what runs and how the time is
shared, and docs/performance.md ("GPU check") for the command a GPU session
runs. Examples::

    # on the GPU machine (wheels from tools/analysis/gpu_wheels.sh)
    python tools/analysis/gpu_check.py --wheels .whl
    # here: every section and code path on the CPU, tiny sizes
    python tools/analysis/gpu_check.py --dry-run
"""
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from tools.analysis.lib import gpu_check  # noqa: E402

if __name__ == '__main__':
    gpu_check.main(script=osp.abspath(__file__))
