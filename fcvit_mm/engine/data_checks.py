# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Checks that a config's data exists and parses before a run starts, so a
mistyped path or a broken annotation file fails in seconds with the file's
name, not minutes later deep inside a library.

COCO annotation files (datasets of mmdet's ``CocoDataset`` family) are also
given to the dataset's own ``parse_data_info``: the annotations it drops
without a word are counted per file and reported as a warning, with the
likely reason of each (a box of zero or negative size or outside its image,
an unknown ``category_id``, ...), and a training file with nothing usable
left is an error that says so. Which annotations count as dropped is what
mmdet decides, not a copy of its rules; the reasons only describe them. The
file is parsed once, here; nothing else is read before the run.
"""
import json
import logging
import os.path as osp
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.logging import print_log


class DatasetError(ValueError):
    """A dataset file that is missing or malformed."""


#: why mmdet's CocoDataset drops an annotation, as the warning describes it
#: (a box of zero size is described as such, though mmdet finds first that
#: it covers no pixel)
SKIP_REASONS = {
    'image': 'an image_id not among the images',
    'size': 'a box of zero or negative size (w < 1, h < 1 or area <= 0)',
    'outside': 'a box entirely outside its image',
    'category': "a category_id not among the file's categories",
    'class': 'a category not among the classes ({classes_key})',
    'other': 'a reason of mmdet not described here',
}


def _datasets(dataset, where: str) -> Iterator[Tuple[dict, str]]:
    """The leaf dataset configs of a (possibly wrapped) dataset config."""
    if not isinstance(dataset, dict):
        return
    if isinstance(dataset.get('datasets'), (list, tuple)):  # ConcatDataset
        for i, d in enumerate(dataset['datasets']):
            yield from _datasets(d, f'{where}.datasets[{i}]')
    elif isinstance(dataset.get('dataset'), dict):  # Repeat/ClassBalanced
        yield from _datasets(dataset['dataset'], f'{where}.dataset')
    else:
        yield dataset, where


def annotation_files(cfg: Config,
                     loaders: List[str]) -> List[Tuple[str, str, dict]]:
    """(path, config key, dataset config) of every annotation file the
    loaders name."""
    found = []
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg or 'dataset' not in loader_cfg:
            continue
        for ds, where in _datasets(loader_cfg['dataset'],
                                   f'{loader}.dataset'):
            ann = ds.get('ann_file')
            if not ann or '://' in str(ann):
                continue
            root = ds.get('data_root') or ''
            path = ann if osp.isabs(ann) else osp.join(root, ann)
            found.append((path, f'{where}.ann_file', ds))
    return found


def _read_json(path: str, key: str):
    try:
        with open(path, encoding='utf-8') as f:
            content = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f'annotation file {path!r} (set by {key}) is not '
                           f'valid JSON: {e}') from None
    if not isinstance(content, (dict, list)):
        raise DatasetError(
            f'annotation file {path!r} (set by {key}) holds a '
            f'{type(content).__name__}, not a JSON object')
    return content


def check_annotation_files(cfg: Config, loaders: List[str]) -> None:
    """Raise :class:`DatasetError` naming the file if an annotation file of
    these dataloaders is missing, or is a ``.json`` that does not parse;
    check COCO files as mmdet will read them (see the module doc)."""
    for path, key, ds in annotation_files(cfg, loaders):
        if not osp.isfile(path):
            raise DatasetError(f'annotation file not found: {path!r} '
                               f'(set by {key})')
        if not path.endswith('.json'):
            continue
        content = _read_json(path, key)
        coco = _coco_dataset(ds, cfg.get('default_scope'))
        if coco is not None and isinstance(content, dict):
            dataset_type, classes, classes_key = coco
            training = key.startswith('train_dataloader') and \
                not ds.get('test_mode', False)
            check_coco_content(content, f'{path!r} ({key})', classes,
                               classes_key, training, ds.get('filter_cfg'),
                               dataset_type)
        del content


def _coco_dataset(ds: dict, scope: Optional[str]):
    """``(dataset class, classes, config key of the classes)`` if ``ds``
    builds a dataset of mmdet's CocoDataset family, else None."""
    if scope != 'mmdet':
        return None
    try:
        from mmdet.datasets import CocoDataset
        from mmdet.registry import DATASETS
        cls = ds.get('type')
        cls = DATASETS.get(cls) if isinstance(cls, str) else cls
    except ImportError:
        return None
    if not (isinstance(cls, type) and issubclass(cls, CocoDataset)):
        return None
    classes = (ds.get('metainfo') or {}).get('classes')
    if classes:
        return cls, tuple(classes), 'metainfo.classes'
    return cls, tuple(cls.METAINFO['classes']), \
        f'the classes of {cls.__name__}'


def _is_malformed(ann: dict) -> bool:
    """Whether mmdet would fail on ``ann`` (no valid bbox or area)."""
    bbox, area = ann.get('bbox'), ann.get('area')
    return not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(
        isinstance(v, (int, float)) for v in bbox)) or \
        not isinstance(area, (int, float))


def _likely_reason(ann: dict, img: dict, categories: dict,
                   wanted: set) -> str:
    """How the warning describes an annotation that mmdet dropped (a key
    of :data:`SKIP_REASONS`)."""
    x1, y1, w, h = ann['bbox']
    if ann['area'] <= 0 or w < 1 or h < 1:
        return 'size'
    width, height = img.get('width', 0), img.get('height', 0)
    if min(x1 + w, width) <= max(x1, 0) or min(y1 + h, height) <= max(y1, 0):
        return 'outside'
    if ann.get('category_id') not in categories:
        return 'category'
    if ann['category_id'] not in wanted:
        return 'class'
    return 'other'


def _parser(dataset_type, classes: Sequence[str], categories: dict):
    """An unloaded dataset of ``dataset_type`` (mmdet's ``CocoDataset``
    by default) whose ``parse_data_info`` keeps what the run will keep: the
    category ids of ``classes``, as its ``load_data_list`` picks them."""
    if dataset_type is None:
        from mmdet.datasets import CocoDataset as dataset_type
    parser = dataset_type(ann_file='', data_prefix=dict(img=''),
                          metainfo=dict(classes=tuple(classes)),
                          pipeline=[], lazy_init=True)
    parser.cat_ids = [i for i, name in categories.items() if name in classes]
    parser.cat2label = {c: n for n, c in enumerate(parser.cat_ids)}
    return parser


def coco_skips(content: dict, classes: Sequence[str], dataset_type=None
               ) -> Tuple[Dict[str, List], int, Dict[str, set]]:
    """What mmdet's ``CocoDataset`` (or ``dataset_type``, one of its
    family) makes of a COCO file's annotations: each image's annotations
    go through its ``parse_data_info``, and those it drops are counted
    (one by one only in an image where it dropped some).

    Returns:
        ``(skipped, usable, image_ids)``: the ids of the skipped annotations
        by likely reason (:data:`SKIP_REASONS`, and 'malformed', which
        mmdet would fail on), the number of annotations kept, and the ids
        of all images ('all') and of those with an annotation of one of the
        classes ('in_classes', what ``filter_empty_gt`` keeps).
    """
    images = {img.get('id'): img for img in content.get('images') or []}
    categories = {c.get('id'): c.get('name')
                  for c in content.get('categories') or []}
    wanted = {i for i, name in categories.items() if name in classes}
    skipped, in_classes = defaultdict(list), set()
    per_image = defaultdict(list)
    for ann in content.get('annotations') or []:
        if not isinstance(ann, dict) or ann.get('ignore', False):
            continue
        if ann.get('category_id') in wanted:
            in_classes.add(ann.get('image_id'))
        if ann.get('image_id') not in images:  # mmdet never sees it
            skipped['image'].append(ann.get('id'))
        elif _is_malformed(ann):
            skipped['malformed'].append(ann.get('id'))
        else:
            per_image[ann['image_id']].append(ann)
    parser, usable = _parser(dataset_type, classes, categories), 0

    def kept(img, anns):
        return len(parser.parse_data_info(dict(
            raw_img_info=dict(img, img_id=img.get('id')),
            raw_ann_info=anns))['instances'])

    for image_id, anns in per_image.items():
        img = images[image_id]
        n = kept(img, anns)
        usable += n
        if n == len(anns):
            continue
        for ann in anns:
            if not kept(img, [ann]):
                skipped[_likely_reason(ann, img, categories,
                                       wanted)].append(ann['id'])
    return skipped, usable, dict(all=set(images), in_classes=in_classes)


def _describe(skipped: Dict[str, List], classes_key: str) -> str:
    parts = []
    for reason, text in SKIP_REASONS.items():
        ids = skipped.get(reason)
        if ids:
            text = text.format(classes_key=classes_key)
            parts.append(f'{len(ids)} with {text}, e.g. id {ids[0]}')
    return '; '.join(parts)


def check_coco_content(content: dict, name: str, classes: Sequence[str],
                       classes_key: str, training: bool,
                       filter_cfg: Optional[dict] = None,
                       dataset_type=None) -> None:
    """Warn about the annotations the loader will drop from this COCO file
    and raise :class:`DatasetError` where the file cannot work: malformed
    annotations, configured classes with no category in the file (the
    labels would shift), or (training) nothing usable left."""
    names = [c.get('name') for c in content.get('categories') or []]
    missing = [c for c in classes if c not in names]
    if missing:
        raise DatasetError(
            f'annotation file {name}: the classes {missing} ({classes_key}) '
            f'have no category in the file (its categories: {names}); set '
            f'metainfo.classes to classes the file has')
    skipped, usable, image_ids = coco_skips(content, classes, dataset_type)
    if skipped.get('malformed'):
        ids = skipped['malformed']
        raise DatasetError(
            f'annotation file {name}: {len(ids)} annotation(s) without a '
            f'valid "bbox" [x, y, w, h] or "area", e.g. id {ids[0]}')
    total = usable + sum(len(v) for v in skipped.values())
    if training and usable == 0:
        why = _describe(skipped, classes_key) or 'the file has none'
        raise DatasetError(
            f'annotation file {name}: none of its {total} annotations is '
            f'usable ({why}); nothing left to train on')
    if skipped:
        print_log(
            f'annotation file {name}: the loader skips {total - usable} of '
            f'{total} annotations: {_describe(skipped, classes_key)}',
            logger='current', level=logging.WARNING)
    if training:
        _check_filter(content, name, image_ids, filter_cfg or {})


def _check_filter(content: dict, name: str, image_ids: Dict[str, set],
                  filter_cfg: dict) -> None:
    """Raise if ``filter_cfg`` leaves no training image (mmdet's rule:
    ``filter_empty_gt`` keeps images with an annotation of the classes,
    ``min_size`` those whose shorter side is at least that)."""
    kept = image_ids['in_classes'] if filter_cfg.get('filter_empty_gt') \
        else image_ids['all']
    min_size = filter_cfg.get('min_size', 0) or 0
    sizes = {img.get('id'): min(img.get('width', 0), img.get('height', 0))
             for img in content.get('images') or []}
    left = [i for i in kept if sizes.get(i, 0) >= min_size]
    if image_ids['all'] and not left:
        raise DatasetError(
            f'annotation file {name}: no image is left for training after '
            f'filter_cfg={dict(filter_cfg)} ({len(image_ids["all"])} images, '
            f'{len(kept)} with an annotation of the classes, none of those '
            f'at least min_size={min_size} pixels on its shorter side)')
