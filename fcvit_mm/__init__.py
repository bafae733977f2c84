"""fcvit_mm: FCViT as a first-class backbone of the OpenMMLab 2.x stack.

Importing the package (every config of this project does, through
``custom_imports``):

* registers the ``FCViT`` backbone in mmengine's root ``MODELS`` registry, so
  ``type='FCViT'`` builds from mmdet, mmseg and mmpretrain configs alike,
  the ``RandomStateHook`` / ``FiniteLossHook`` / ``SafeCheckpointHook`` hooks
  in the root ``HOOKS`` (the configs' runtime names them), and the
  ``'atomic_local'`` file backend under its own name (mmengine's ``'local'``
  backend stays as it is);
* adds the plain data types that mmengine writes into checkpoints to torch's
  weights-only allowlist (no checkpoint can run code);
* registers the classification configs with mmpretrain's ModelHub, at once
  if mmpretrain is imported, else when it is
  (``fcvit_mm.utils.model_index.register_model_index()`` does it
  explicitly).
"""
from .utils.checkpoint import register_safe_globals

register_safe_globals()

from .engine import hooks  # noqa: F401,E402  (registers the hooks)
from .models import FCViT  # noqa: E402

from .utils.model_index import register_model_index_on_import  # noqa
register_model_index_on_import()

__version__ = '0.1.0'
__all__ = ['FCViT', '__version__']
