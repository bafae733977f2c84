"""fcvit_mm: FCViT as a first-class backbone of the OpenMMLab 2.x stack.

Importing the package (every config of this project does, through
``custom_imports``) registers, and changes nothing else:

* the ``FCViT`` backbone in mmengine's root ``MODELS`` registry, so
  ``type='FCViT'`` builds from mmdet, mmseg and mmpretrain configs alike;
* the run's hooks in the root ``HOOKS`` registry and the ``'atomic_local'``
  file backend under its own name (:mod:`fcvit_mm.engine`);
* the plain data types that mmengine writes into checkpoints in torch's
  weights-only allowlist (no checkpoint can run code), how mmengine's
  ``HistoryBuffer`` pickles as plain data, and the ``fcvit-safe://``
  checkpoint scheme (mmengine loads a path through the safe loader);
* the classification model index with mmpretrain's ModelHub, at once if
  mmpretrain is imported, else right after it is.

The last two go beyond registries, and so do two changes made on the
onedl-* stack only (``mmseg::`` config bases resolve; mmengine's checkpoint
loading stays weights-only): :mod:`fcvit_mm.internals` says why, together
with every private name of another library that fcvit_mm uses.
"""
from .internals import register_config_scopes, register_history_buffer_pickling
from .models import FCViT
from .models.checkpoint import (guard_checkpoint_loading,
                                register_safe_globals, register_safe_scheme)
from . import engine  # noqa: F401,E402  (registers the hooks)
from .utils.model_index import register_model_index_on_import

register_safe_globals()
register_safe_scheme()
register_history_buffer_pickling()
register_model_index_on_import()
register_config_scopes()  # the onedl-* stack (fcvit_mm.internals)
guard_checkpoint_loading()

__version__ = '0.1.0'
__all__ = ['FCViT', '__version__']
