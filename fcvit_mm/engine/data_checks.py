# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Checks that a config's data exists and parses before a run starts, so a
mistyped path or a broken annotation file fails in seconds with the file's
name, not minutes later deep inside a library."""
import json
import os.path as osp
from typing import Iterator, List, Tuple

from mmengine.config import Config


class DatasetError(ValueError):
    """A dataset file that is missing or malformed."""


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


def annotation_files(cfg: Config, loaders: List[str]) -> List[Tuple[str, str]]:
    """(path, config key) of every annotation file the loaders name."""
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
            found.append((path, f'{where}.ann_file'))
    return found


def check_annotation_files(cfg: Config, loaders: List[str]) -> None:
    """Raise :class:`DatasetError` naming the file if an annotation file of
    these dataloaders is missing, or is a ``.json`` that does not parse."""
    for path, key in annotation_files(cfg, loaders):
        if not osp.isfile(path):
            raise DatasetError(f'annotation file not found: {path!r} '
                               f'(set by {key})')
        if path.endswith('.json'):
            try:
                with open(path, encoding='utf-8') as f:
                    content = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DatasetError(
                    f'annotation file {path!r} (set by {key}) is not valid '
                    f'JSON: {e}') from None
            if not isinstance(content, (dict, list)):
                raise DatasetError(
                    f'annotation file {path!r} (set by {key}) holds a '
                    f'{type(content).__name__}, not a JSON object')
            del content
