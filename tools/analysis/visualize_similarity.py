#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""FCViT's token-to-global similarity maps (the paper's Figure 3) for an image.

    python tools/analysis/visualize_similarity.py CONFIG CHECKPOINT IMAGE \\
        --out FILE.png [--block -1] [--gc 1] [--size H W] [--alpha 0.5]

For every head of the chosen block's global-context module, the normalised
similarity of each position to the image's mean token
(``GlobalContext.similarity``, including the per-head affine) is upsampled
over the image and drawn as a heat map (per-head min-max scaling, red =
most similar); the image itself is the first tile of the grid.

* ``CONFIG``: a detection / segmentation / classification config of this
  project (its data preprocessor normalises the image), or ``fcvit-ARCH`` for
  a bare backbone with ImageNet normalisation.
* ``CHECKPOINT``: a checkpoint of that model (``backbone.*`` keys), or an
  FCViT backbone checkpoint in the reference or this project's layout.
* ``--block``: ``-1`` (the last block, default), a block index counted over
  the whole network, or ``STAGE.BLOCK`` (e.g. ``3.1``).
* ``--gc``: which of the token mixer's two global-context modules (1 or 2).
* ``--size``: resize the image to H x W first (default: the image's size
  scaled so that the longer side is at most 512, multiples of 32).
"""
import argparse
import os
import os.path as osp
import sys
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from tools.analysis.lib.models import model_from_name_or_config  # noqa: E402

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def select_block(backbone, block: str):
    """The block named by ``--block`` (see the module doc)."""
    blocks = [(i, j, b) for i, s in enumerate(backbone.stages)
              for j, b in enumerate(s.blocks)]
    try:
        if '.' in block:
            si, bi = (int(v) for v in block.split('.'))
            return next(b for i, j, b in blocks if (i, j) == (si, bi)), \
                f'stage {si} block {bi}'
        k = int(block)
        i, j, b = blocks[k]
        return b, f'stage {i} block {j}'
    except (ValueError, IndexError, StopIteration):
        layout = ', '.join(f'stage {i}: {len(s.blocks)}'
                           for i, s in enumerate(backbone.stages))
        raise ValueError(
            f'--block {block!r} does not name a block: use -1, an index in '
            f'[-{len(blocks)}, {len(blocks) - 1}] or STAGE.BLOCK '
            f'(blocks per stage: {layout})') from None


def load_weights(model: nn.Module, backbone, checkpoint: str):
    """Whole-model checkpoint if its keys fit, else a backbone checkpoint."""
    from fcvit_mm.models.checkpoint import (extract_state_dict,
                                            is_reference_layout,
                                            load_pretrained, safe_load)
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint!r}')
    sd = extract_state_dict(safe_load(checkpoint, map_location='cpu'),
                            checkpoint)
    own = model.state_dict()
    if (model is not backbone and not is_reference_layout(sd)
            and any(k in own for k in sd)):
        fitting = {k: v for k, v in sd.items()
                   if k in own and v.shape == own[k].shape}
        bb_keys = [k for k in own if k.startswith('backbone.')]
        if not all(k in fitting for k in bb_keys):
            missing = [k for k in bb_keys if k not in fitting][:5]
            raise ValueError(f'checkpoint {checkpoint!r} does not fit the '
                             f'model: backbone keys missing or of another '
                             f'shape, e.g. {missing}')
        model.load_state_dict(fitting, strict=False)
        return
    load_pretrained(backbone, checkpoint, prefix='backbone.')


def read_image(path: str, size: Optional[Tuple[int, int]]) -> np.ndarray:
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'cannot read image {path!r}')
    if size is None:
        h, w = img.shape[:2]
        scale = min(1.0, 512 / max(h, w))
        size = (max(32, int(round(h * scale / 32)) * 32),
                max(32, int(round(w * scale / 32)) * 32))
    if tuple(img.shape[:2]) != tuple(size):
        img = cv2.resize(img, (size[1], size[0]),
                         interpolation=cv2.INTER_LINEAR)
    return img  # BGR uint8


def to_input(model: nn.Module, img: np.ndarray) -> torch.Tensor:
    """Normalised (1, 3, H', W') input the way the model's data
    preprocessor makes it (padding, if any, is at the bottom/right)."""
    chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    pre = getattr(model, 'data_preprocessor', None)
    if pre is not None and not isinstance(pre, nn.Identity):
        data = pre(dict(inputs=[chw], data_samples=None), False)
        return data['inputs'].float()
    rgb = chw.flip(0).float()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((rgb - mean) / std).unsqueeze(0)


@torch.no_grad()
def similarity_maps(backbone, block, inputs: torch.Tensor,
                    gc_index: int = 1) -> torch.Tensor:
    """(heads, h, w) similarity maps of ``block``'s GC ``gc_index``."""
    from fcvit_mm.models.backbones.fcvit import using_kernels
    gc = getattr(block.token_mixer, f'gc{gc_index}')
    seen = {}

    def hook(module, args):
        seen['x'] = args[0]

    handle = gc.register_forward_pre_hook(hook)
    try:
        backbone.eval()
        # the plain formulation calls the GC module
        with using_kernels(backbone, 'plain'):
            backbone(inputs)
    finally:
        handle.remove()
    if 'x' not in seen:
        raise RuntimeError('the chosen block did not run (is it after the '
                           "backbone's last out_indices stage?)")
    return gc.similarity(seen['x'])[0]


def render_grid(img: np.ndarray, maps: torch.Tensor, title: str,
                alpha: float = 0.5, cols: int = 3) -> np.ndarray:
    """Image + one heat-map overlay per head, as a BGR uint8 grid."""
    import cv2
    H, W = img.shape[:2]
    up = F.interpolate(maps[None].float(), size=(H, W), mode='bilinear',
                       align_corners=False)[0]
    tiles = [img.copy()]
    cv2.putText(tiles[0], 'image', (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (255, 255, 255), 1, cv2.LINE_AA)
    for h, m in enumerate(up):
        lo, hi = m.min(), m.max()
        m8 = ((m - lo) / (hi - lo).clamp_min(1e-12) * 255).byte().numpy()
        heat = cv2.applyColorMap(m8, cv2.COLORMAP_JET)
        tile = cv2.addWeighted(img, 1 - alpha, heat, alpha, 0)
        cv2.putText(tile, f'head {h}', (4, 14), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    rows = -(-len(tiles) // cols)
    pad = 4
    grid = np.full((rows * (H + pad) + pad + 20, cols * (W + pad) + pad, 3),
                   255, np.uint8)
    cv2.putText(grid, title, (pad, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = 20 + pad + r * (H + pad), pad + c * (W + pad)
        grid[y:y + H, x:x + W] = tile
    return grid


def build(config: str):
    """(model, FCViT backbone) from a config or an ``fcvit-ARCH`` name."""
    return model_from_name_or_config(config)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Per-head token-to-global similarity maps of FCViT',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('config', help='config file or fcvit-ARCH')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('image', help='image file')
    p.add_argument('--out', required=True, help='output PNG')
    p.add_argument('--block', default='-1',
                   help='-1 (last), global index, or STAGE.BLOCK')
    p.add_argument('--gc', type=int, choices=[1, 2], default=1,
                   help="which of the token mixer's global contexts")
    p.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                   help='resize the image first')
    p.add_argument('--alpha', type=float, default=0.5,
                   help='heat-map opacity')
    args = p.parse_args(argv)
    if args.size is not None and min(args.size) < 32:
        p.error(f'--size must be at least 32 x 32, got {args.size}')
    if not 0 <= args.alpha <= 1:
        p.error('--alpha must be in [0, 1]')
    return args


def main(argv=None):
    args = parse_args(argv)
    import cv2

    import fcvit_mm  # noqa: F401
    model, backbone = build(args.config)
    load_weights(model, backbone, args.checkpoint)
    model.eval()
    block, where = select_block(backbone, args.block)
    img = read_image(args.image, args.size)
    inputs = to_input(model, img)
    maps = similarity_maps(backbone, block, inputs, args.gc)
    # crop the maps to the unpadded image (stride of the block's stage)
    H, W = img.shape[:2]
    ph, pw = inputs.shape[-2:]
    maps = maps[:, :max(1, round(maps.shape[1] * H / ph)),
                :max(1, round(maps.shape[2] * W / pw))]
    title = (f'{where}, gc{args.gc}: similarity to the global token '
             f'({maps.shape[1]}x{maps.shape[2]} map)')
    grid = render_grid(img, maps, title, args.alpha)
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    if not cv2.imwrite(args.out, grid):
        raise OSError(f'could not write {args.out!r}')
    print(f'wrote {args.out} ({where}, {maps.shape[0]} heads)')
    return maps


if __name__ == '__main__':
    main()
