# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""A seeded generator of synthetic-shapes datasets in three real layouts
(the data of the demo and of the tests; the command line is
``tools/dataset_converters/make_shapes.py``).

Images show a few filled shapes (``circle``, ``square``, ``triangle``) of
random size, colour, rotation and position, on a random background (a
two-colour gradient with pixel noise); shapes may overlap, and a later shape
hides the part of an earlier one that it covers. The same drawing is written
in the layout that the OpenMMLab dataset classes read for the real data:

``fmt='coco'`` (mmdet ``CocoDataset``, instance segmentation)::

    root/train2017/000000000001.jpg ...
    root/val2017/000000000001.jpg ...
    root/annotations/instances_train2017.json
    root/annotations/instances_val2017.json

    category ids 1, 2, 3 = circle, square, triangle; one polygon per object
    (its visible outline), ``bbox`` = [x, y, w, h] of the visible pixels,
    ``area`` = visible pixel count, ``iscrowd`` = 0.

``fmt='ade20k'`` (mmseg ``ADE20KDataset``, semantic segmentation)::

    root/images/{training,validation}/000001.jpg
    root/annotations/{training,validation}/000001.png

    label maps follow ADE20K: 0 = background ("other", ignored with
    ``reduce_zero_label=True``), 1..3 = circle, square, triangle.

``fmt='imagenet'`` (mmpretrain ``CustomDataset``/``ImageNet``, one shape per
image)::

    root/train/{circle,square,triangle}/000001.JPEG
    root/val/{circle,square,triangle}/000001.JPEG
    root/meta/train.txt, root/meta/val.txt   ("circle/000001.JPEG 0" lines)

Generation is a pure function of the arguments: each image is drawn from its
own random stream keyed by ``(seed, split, index)``, so the same seed gives
the same files, and the val split does not change when ``num_train`` does.
``coco`` and ``ade20k`` draw the same scenes for the same arguments.

Only numpy and OpenCV are needed (no pycocotools).
"""
import json
import os
import os.path as osp
import shutil
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

#: the classes, in label order (COCO category ids are index + 1)
SHAPES_CLASSES = ('circle', 'square', 'triangle')

FORMATS = ('coco', 'ade20k', 'imagenet')
_META_FILE = 'shapes_meta.json'
_SPLIT_CODE = {'train': 0, 'val': 1}
# sub-folders each format writes (removed before regenerating)
_OWNED = {
    'coco': ('train2017', 'val2017', 'annotations'),
    'ade20k': ('images', 'annotations'),
    'imagenet': ('train', 'val', 'meta'),
}


# --------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------
def _shape_polygon(rng: np.random.Generator, cls: int, size: float,
                   rotate: bool) -> Optional[np.ndarray]:
    """Vertices (N, 2) around the origin for a square or a triangle; None for
    a circle (drawn exactly)."""
    angle = rng.uniform(0, 2 * np.pi) if rotate else 0.0
    if cls == 1:  # square of side `size`
        base = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * (
            size / 2)
    elif cls == 2:  # equilateral triangle inscribed in a circle of diameter
        t = np.deg2rad([-90, 30, 150])
        base = np.stack([np.cos(t), np.sin(t)], 1) * (size / 2)
    else:
        return None
    c, s = np.cos(angle), np.sin(angle)
    return base @ np.array([[c, s], [-s, c]])


def _draw_mask(h: int, w: int, cls: int, center: Tuple[float, float],
               size: float, verts: Optional[np.ndarray]) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    if verts is None:
        cv2.circle(mask, (int(round(center[0])), int(round(center[1]))),
                   int(round(size / 2)), 1, thickness=-1,
                   lineType=cv2.LINE_8)
    else:
        pts = np.round(verts + np.asarray(center)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8)
    return mask


def _background(rng: np.random.Generator, h: int, w: int
                ) -> Tuple[np.ndarray, np.ndarray]:
    """A two-colour linear gradient in a random direction (float RGB) and its
    mean colour."""
    c0, c1 = rng.uniform(0, 255, (2, 3))
    theta = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(theta) * xs / max(w - 1, 1) +
         np.sin(theta) * ys / max(h - 1, 1))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    return img.astype(np.float32), (c0 + c1) / 2


def _pick_colour(rng: np.random.Generator, avoid: np.ndarray,
                 min_contrast: float) -> np.ndarray:
    for _ in range(50):
        col = rng.uniform(0, 255, 3)
        if np.abs(col - avoid).mean() >= min_contrast:
            return col
    return 255.0 - avoid  # always far enough from the background


def _outline(mask: np.ndarray) -> Optional[np.ndarray]:
    """The outline (N, 2 float x, y) of a mask that is one connected piece
    without holes, else None.

    The contour is traced on the mask upsampled twice, so its vertices lie a
    quarter pixel inside the pixel edges: rasterised as a COCO polygon
    (pycocotools) it gives back exactly the mask's pixels.
    """
    up = cv2.resize(mask, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_CCOMP,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) != 1 or len(contours[0]) < 3:
        return None
    return (contours[0].reshape(-1, 2) + 0.5) / 2


def draw_scene(rng: np.random.Generator, img_size: Tuple[int, int],
               num_objects: Tuple[int, int] = (1, 4),
               size_range: Tuple[float, float] = (0.2, 0.5),
               min_visible: float = 0.6, noise: float = 8.0,
               rotate: bool = True, min_contrast: float = 60.0,
               classes: Optional[Sequence[int]] = None) -> Tuple[
                   np.ndarray, list]:
    """Draw one image with a few shapes.

    Args:
        rng: the random stream of this image.
        img_size: (height, width).
        num_objects: inclusive range of the number of shapes.
        size_range: range of a shape's diameter (circle diameter, square
            side, triangle circumscribed diameter) as a fraction of the
            shorter image side.
        min_visible: an earlier shape must keep at least this fraction of
            its pixels visible (and stay one piece without holes) when a
            later shape is placed over it, else the later one is re-drawn.
        noise: standard deviation of the Gaussian pixel noise.
        rotate: rotate squares and triangles by a random angle.
        min_contrast: least mean absolute RGB difference between a shape's
            colour and the background's mean colour.
        classes: a fixed class index per shape (overrides ``num_objects``).

    Returns:
        tuple: the RGB ``uint8`` image (H, W, 3) and a list of objects, each
        ``dict(label, mask, polygon, bbox)`` (label 0-based, ``mask`` the
        visible pixels, ``polygon`` (N, 2) float outline, ``bbox`` x, y, w, h),
        in drawing order (later ones on top).
    """
    h, w = img_size
    img, bg_mean = _background(rng, h, w)
    if classes is None:
        n = int(rng.integers(num_objects[0], num_objects[1] + 1))
        classes = [int(c) for c in rng.integers(0, len(SHAPES_CLASSES), n)]
    placed = []  # (label, full mask, colour)
    for cls in classes:
        full = _place_shape(rng, cls, (h, w), placed, size_range,
                            min_visible, rotate)
        if full is not None:  # else no place found: the shape is left out
            placed.append((cls, full, _pick_colour(rng, bg_mean,
                                                   min_contrast)))
    objects = _paint(img, placed)
    if noise > 0:
        img = img + rng.normal(0, noise, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects


def _keeps_visible(placed: list, full: np.ndarray,
                   min_visible: float) -> bool:
    """Whether every placed shape stays visible enough (and one piece
    without holes) with ``full`` drawn on top."""
    for k, (_, prev, _) in enumerate(placed):
        vis = prev.copy()
        for _, later, _ in placed[k + 1:]:
            vis[later > 0] = 0
        vis[full > 0] = 0
        if vis.sum() < min_visible * prev.sum() or _outline(vis) is None:
            return False
    return True


def _place_shape(rng: np.random.Generator, cls: int, img_size, placed: list,
                 size_range, min_visible: float, rotate: bool,
                 tries: int = 30) -> Optional[np.ndarray]:
    """The full mask of a shape of class ``cls`` placed over ``placed``
    without hiding too much of them; None if ``tries`` draws fail."""
    h, w = img_size
    for _attempt in range(tries):
        size = rng.uniform(*size_range) * min(h, w)
        verts = _shape_polygon(rng, cls, size, rotate)
        ext = (np.abs(verts).max(0) if verts is not None else
               np.array([size / 2, size / 2]))
        lo, hi = ext, np.array([w - 1, h - 1]) - ext
        if np.any(hi < lo):
            continue
        center = rng.uniform(lo, hi)
        full = _draw_mask(h, w, cls, center, size, verts)
        if full.sum() >= 9 and _keeps_visible(placed, full, min_visible):
            return full
    return None


def _paint(img: np.ndarray, placed: list) -> list:
    """Paint the placed shapes (later on top) into ``img``; the objects
    with their visible masks, outlines and boxes, in drawing order."""
    objects = []
    covered = np.zeros(img.shape[:2], np.uint8)
    for cls, full, colour in reversed(placed):
        vis = full.copy()
        vis[covered > 0] = 0
        covered |= full
        img[vis > 0] = colour
        ys, xs = np.nonzero(vis)
        bbox = [int(xs.min()), int(ys.min()),
                int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        objects.append(dict(label=cls, mask=vis, polygon=_outline(vis),
                            bbox=bbox))
    objects.reverse()
    return objects


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------
def _imwrite(path: str, rgb: np.ndarray) -> None:
    ext = osp.splitext(path)[1].lower()
    params = ([cv2.IMWRITE_JPEG_QUALITY, 95] if ext in ('.jpg', '.jpeg')
              else [])
    img = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    if not cv2.imwrite(path, np.ascontiguousarray(img), params):
        raise OSError(f'could not write image {path!r}')


def _rng(seed: int, stream: int, split: str, index: int):
    return np.random.default_rng([seed, stream, _SPLIT_CODE[split], index])


def _write_coco(root, split, num, img_size, seed, scene_kw):
    folder = f'{split}2017'
    os.makedirs(osp.join(root, folder), exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        img, objects = draw_scene(_rng(seed, 0, split, i), img_size,
                                  **scene_kw)
        image_id = i + 1
        name = f'{image_id:012d}.jpg'
        _imwrite(osp.join(root, folder, name), img)
        images.append(dict(id=image_id, file_name=name, height=img_size[0],
                           width=img_size[1]))
        for obj in objects:
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id,
                category_id=obj['label'] + 1,
                segmentation=[obj['polygon'].astype(float).ravel().tolist()],
                area=float(obj['mask'].sum()), bbox=obj['bbox'], iscrowd=0))
    categories = [dict(id=k + 1, name=name, supercategory='shape')
                  for k, name in enumerate(SHAPES_CLASSES)]
    ann_file = osp.join(root, 'annotations', f'instances_{split}2017.json')
    os.makedirs(osp.dirname(ann_file), exist_ok=True)
    with open(ann_file, 'w') as f:
        json.dump(dict(info=dict(description='fcvit_mm synthetic shapes'),
                       licenses=[], images=images, annotations=annotations,
                       categories=categories), f)
    return osp.join(root, folder), ann_file


def _write_ade20k(root, split, num, img_size, seed, scene_kw):
    sub = {'train': 'training', 'val': 'validation'}[split]
    img_dir = osp.join(root, 'images', sub)
    seg_dir = osp.join(root, 'annotations', sub)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(seg_dir, exist_ok=True)
    for i in range(num):
        # same stream as the coco layout: the same scenes
        img, objects = draw_scene(_rng(seed, 0, split, i), img_size,
                                  **scene_kw)
        label = np.zeros(img_size, np.uint8)
        for obj in objects:
            label[obj['mask'] > 0] = obj['label'] + 1
        name = f'{i + 1:06d}'
        _imwrite(osp.join(img_dir, name + '.jpg'), img)
        _imwrite(osp.join(seg_dir, name + '.png'), label)
    return img_dir, seg_dir


def _write_imagenet(root, split, num, img_size, seed, scene_kw):
    split_dir = osp.join(root, split)
    for name in SHAPES_CLASSES:
        os.makedirs(osp.join(split_dir, name), exist_ok=True)
    kw = {k: v for k, v in scene_kw.items() if k != 'num_objects'}
    lines = []
    for i in range(num):
        rng = _rng(seed, 1, split, i)
        cls = int(rng.integers(0, len(SHAPES_CLASSES)))
        img, _ = draw_scene(rng, img_size, classes=[cls], **kw)
        rel = f'{SHAPES_CLASSES[cls]}/{i + 1:06d}.JPEG'
        _imwrite(osp.join(split_dir, rel), img)
        lines.append(f'{rel} {cls}\n')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    ann_file = osp.join(root, 'meta', f'{split}.txt')
    with open(ann_file, 'w') as f:
        f.writelines(lines)
    return split_dir, ann_file


def _check_args(fmt, num_train, num_val, img_size, num_objects, size_range,
                min_visible, noise):
    """Raise on a bad argument; return ``img_size`` as (h, w) and
    ``num_objects``, ``size_range`` as tuples of ints / floats."""
    if isinstance(img_size, (int, np.integer)):
        img_size = (int(img_size), int(img_size))
    img_size = tuple(int(s) for s in img_size)
    num_objects = tuple(int(n) for n in num_objects)
    size_range = tuple(float(s) for s in size_range)
    if fmt not in FORMATS:
        raise ValueError(f'fmt must be one of {FORMATS}, got {fmt!r}')
    for name, val in (('num_train', num_train), ('num_val', num_val)):
        if not isinstance(val, (int, np.integer)) or val < 0:
            raise ValueError(f'{name} must be an int >= 0, got {val!r}')
    if (len(img_size) != 2 or min(img_size) < 16):
        raise ValueError(f'img_size must be an int or (h, w) of at least 16 '
                         f'pixels, got {img_size!r}')
    lo, hi = num_objects
    if not 1 <= lo <= hi:
        raise ValueError(f'num_objects must be (min, max) with '
                         f'1 <= min <= max, got {num_objects!r}')
    lo, hi = size_range
    if not 0 < lo <= hi <= 1:
        raise ValueError(f'size_range must be fractions 0 < min <= max <= 1 '
                         f'of the image side, got {size_range!r}')
    if not 0 <= min_visible <= 1:
        raise ValueError(f'min_visible must be in [0, 1], got '
                         f'{min_visible!r}')
    if noise < 0:
        raise ValueError(f'noise must be >= 0, got {noise!r}')
    return img_size, num_objects, size_range


def _layout_paths(root: str, fmt: str) -> Dict[str, str]:
    """The absolute paths that ``make_shapes_dataset`` returns."""
    if fmt == 'coco':
        ann = osp.join(root, 'annotations')
        return dict(
            train_img_dir=osp.join(root, 'train2017'),
            val_img_dir=osp.join(root, 'val2017'),
            train_ann_file=osp.join(ann, 'instances_train2017.json'),
            val_ann_file=osp.join(ann, 'instances_val2017.json'))
    if fmt == 'ade20k':
        return dict(
            train_img_dir=osp.join(root, 'images', 'training'),
            val_img_dir=osp.join(root, 'images', 'validation'),
            train_seg_dir=osp.join(root, 'annotations', 'training'),
            val_seg_dir=osp.join(root, 'annotations', 'validation'))
    return dict(train_dir=osp.join(root, 'train'),
                val_dir=osp.join(root, 'val'),
                train_ann_file=osp.join(root, 'meta', 'train.txt'),
                val_ann_file=osp.join(root, 'meta', 'val.txt'))


def _made_before(root: str, fmt: str, params: dict, overwrite: bool) -> bool:
    """True if ``root`` holds a complete dataset made with ``params`` (and
    ``overwrite`` is off); otherwise clear what an earlier generation
    wrote there, refusing to touch folders it did not make."""
    meta_path = osp.join(root, _META_FILE)
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            try:
                previous = json.load(f)
            except ValueError:
                previous = {}
        done = previous.pop('complete', False)
        if done and previous == params and not overwrite:
            return True
        # ours: clear what the earlier generation wrote, so no stale files
        for sub in set(_OWNED.get(previous.get('fmt'), ()) + _OWNED[fmt]):
            shutil.rmtree(osp.join(root, sub), ignore_errors=True)
    elif osp.isdir(root) and any(
            osp.exists(osp.join(root, sub)) for sub in _OWNED[fmt]):
        raise FileExistsError(
            f'{root!r} already has {list(_OWNED[fmt])} folders that were not '
            f'made by make_shapes_dataset (no {_META_FILE}); choose an empty '
            f'folder')
    return False


def make_shapes_dataset(root: str, fmt: str = 'coco', num_train: int = 200,
                        num_val: int = 50, img_size=128, seed: int = 0,
                        num_objects: Tuple[int, int] = (1, 4),
                        size_range: Tuple[float, float] = (0.2, 0.5),
                        min_visible: float = 0.6, noise: float = 8.0,
                        rotate: bool = True, min_contrast: float = 60.0,
                        overwrite: bool = False) -> Dict:
    """Generate a synthetic-shapes dataset in a real dataset layout.

    Args:
        root: the dataset folder (created; for a second format use another
            folder, e.g. ``data/shapes/coco`` and ``data/shapes/ade20k``).
        fmt: ``'coco'``, ``'ade20k'`` or ``'imagenet'`` (see module doc).
        num_train, num_val: number of images per split.
        img_size: int or (height, width).
        seed: the random seed; the same arguments give the same files.
        num_objects: (min, max) shapes per image (coco, ade20k; imagenet
            images have one shape).
        size_range, min_visible, noise, rotate, min_contrast: the difficulty
            (see :func:`draw_scene`).
        overwrite: regenerate even if ``root`` already holds a dataset made
            with the same arguments (which is otherwise reused as is).

    Returns:
        dict: ``root``, ``format``, ``classes``, ``num_train``, ``num_val``
        and absolute paths. coco: ``train_img_dir``, ``val_img_dir``,
        ``train_ann_file``, ``val_ann_file``; ade20k: ``train_img_dir``,
        ``val_img_dir``, ``train_seg_dir``, ``val_seg_dir``; imagenet:
        ``train_dir``, ``val_dir``, ``train_ann_file``, ``val_ann_file``.
        Also ``generated``: False when an existing dataset was reused.
    """
    img_size, num_objects, size_range = _check_args(
        fmt, num_train, num_val, img_size, num_objects, size_range,
        min_visible, noise)
    root = osp.abspath(root)
    params = dict(fmt=fmt, num_train=int(num_train), num_val=int(num_val),
                  img_size=list(img_size), seed=int(seed),
                  num_objects=list(num_objects), size_range=list(size_range),
                  min_visible=float(min_visible), noise=float(noise),
                  rotate=bool(rotate), min_contrast=float(min_contrast))
    out = dict(_layout_paths(root, fmt), root=root, format=fmt,
               classes=SHAPES_CLASSES, num_train=int(num_train),
               num_val=int(num_val))
    meta_path = osp.join(root, _META_FILE)
    if _made_before(root, fmt, params, overwrite):
        return dict(out, generated=False)
    os.makedirs(root, exist_ok=True)
    # marked complete at the end: an interrupted run is regenerated next time
    with open(meta_path, 'w') as f:
        json.dump(dict(params, complete=False), f, indent=1)

    scene_kw = dict(num_objects=num_objects, size_range=size_range,
                    min_visible=min_visible, noise=noise, rotate=rotate,
                    min_contrast=min_contrast)
    writer = dict(coco=_write_coco, ade20k=_write_ade20k,
                  imagenet=_write_imagenet)[fmt]
    for split, num in (('train', num_train), ('val', num_val)):
        writer(root, split, int(num), img_size, int(seed), scene_kw)
    with open(meta_path, 'w') as f:
        json.dump(dict(params, complete=True), f, indent=1)
    return dict(out, generated=True)
