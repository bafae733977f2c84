# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Make the FCViT classification configs known to mmpretrain's ModelHub,
so that ``mmpretrain.get_model('fcvit-b12_8xb128_in1k', pretrained=CKPT)``,
``list_models('fcvit*')`` and ``inference_model`` (which looks the task up
there) work with them, whether ``fcvit_mm`` or mmpretrain is imported
first.

The model index and the configs are found inside the installed package
(``fcvit_mm/.mim/``, which setup.py fills, as the OpenMMLab packages do) or,
in a source checkout, at the repository root.
"""
import importlib.abc
import importlib.util
import os.path as osp
import sys
import warnings
from typing import Optional

PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: the classification model index, relative to the index root
CLS_METAFILE = osp.join('configs', 'classification', 'metafile.yml')
#: a model of the index (tells whether it is registered)
PROBE = 'fcvit-b12_8xb128_in1k'


def index_root() -> Optional[str]:
    """The folder that the model index's config paths are relative to:
    the package's ``.mim/`` when it has one, else the source checkout's
    root; None when neither holds the index."""
    for root in (osp.join(PACKAGE_DIR, '.mim'), osp.dirname(PACKAGE_DIR)):
        if osp.isfile(osp.join(root, CLS_METAFILE)):
            return root
    return None


def register_model_index() -> bool:
    """Register the classification model index with mmpretrain (once).

    Returns:
        bool: whether the FCViT models are now known to mmpretrain (False
        when no model index is found next to the package).
    """
    root = index_root()
    if root is None:
        return False
    from mmpretrain.apis import ModelHub
    if not ModelHub.has(PROBE):
        ModelHub.register_model_index(
            osp.join(root, CLS_METAFILE), config_prefix=root)
    return True


class _RegisterAfterMMPretrain(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``mmpretrain`` is first imported it asks
    the other finders for it, and has the index registered once the module
    has run. It leaves ``sys.meta_path`` at that moment."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'mmpretrain':
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            try:
                register_model_index()
            except Exception as e:  # never break mmpretrain's import
                warnings.warn(f'fcvit_mm: the FCViT model index was not '
                              f'registered with mmpretrain: {e!r}')

        spec.loader.exec_module = exec_module
        return spec


def register_model_index_on_import() -> None:
    """Register the index now if mmpretrain is imported, else right after
    mmpretrain's import (what ``import fcvit_mm`` calls)."""
    if 'mmpretrain' in sys.modules:
        register_model_index()
    elif not any(isinstance(f, _RegisterAfterMMPretrain)
                 for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterMMPretrain())
