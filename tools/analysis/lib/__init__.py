# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Code shared by the analysis tools (``tools/analysis/*``) and their tests.

Not part of the installed package (``pip install fcvit-mm`` does not
install it): the tools import it from a clone, ``fcvit_mm`` never does.
Models from a config are built by :mod:`fcvit_mm.utils.config`, as the
deploy package builds them.

* :mod:`.models`: models by name (``fcvit-ARCH[-plain][-cp][-cl]``, the one
  parser of these names, and mmpretrain peers) or from a config
  (``pkg::path`` for the libraries' own), switching FCViT to its plain path;
* :mod:`.data`: synthetic batches in the data format of mmdet, mmseg or
  mmpretrain;
* :mod:`.measure`: benchmark targets, interleaved timing, peak memory, the
  OpenMP wait policy and the command-line options the measuring tools
  share;
* :mod:`.gpu_check`: the GPU check (CUDA tests and the benchmark table in
  bounded time, each section in its own process);
* :mod:`.ops_standin`: torchvision-backed ``nms`` / ``batched_nms`` /
  ``RoIAlign`` / ``sigmoid_focal_loss`` registered as ``mmcv.ops`` where
  mmcv's compiled ops are missing.

Kernel recording for the kernel floor is
:class:`fcvit_mm.models.backbones.fcvit_ops.KernelRecorder`.
"""
