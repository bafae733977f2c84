# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Make the FCViT classification configs known to mmpretrain's ModelHub,
so that ``mmpretrain.get_model('fcvit-b12_8xb128_in1k', pretrained=CKPT)``,
``list_models('fcvit*')`` and ``inference_model`` (which looks the task up
there) work with them."""
import os.path as osp

METAFILE = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'classification', 'metafile.yml')


def register_model_index() -> bool:
    """Register ``configs/classification/metafile.yml`` (once).

    Returns:
        bool: whether the FCViT models are now known to mmpretrain (False
        when the configs are not next to the package, e.g. a wheel install).
    """
    if not osp.isfile(METAFILE):
        return False
    from mmpretrain.apis import ModelHub
    if not ModelHub.has('fcvit-b12_8xb128_in1k'):
        ModelHub.register_model_index(METAFILE)
    return True
