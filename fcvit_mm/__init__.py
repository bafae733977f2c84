"""fcvit_mm: FCViT as a first-class backbone of the OpenMMLab 2.x stack.

Importing the package registers the ``FCViT`` backbone in mmengine's root
``MODELS`` registry (so ``type='FCViT'`` builds from mmdet, mmseg and
mmpretrain configs alike) and adds the plain data types that mmengine writes
into checkpoints to torch's weights-only allowlist.
"""
from .utils.checkpoint import register_safe_globals

register_safe_globals()

from .models import FCViT  # noqa: E402

__version__ = '0.1.0'
__all__ = ['FCViT', '__version__']
