# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Data checked against the model as it is loaded, whichever ``train.py`` /
``test.py`` runs a config (the configs declare :class:`DataCheckHook`):

* a head whose ``num_classes`` differs from the number of classes of the
  dataset it trains or is evaluated on is an error naming both, before the
  first iteration (a warning for a model evaluated on fewer classes than
  it predicts);
* a sample whose image or label map cannot be loaded fails naming the file
  (and saying so if it is empty or missing), not with a bare decoder error;
* label-map values beyond ``model.decode_head.num_classes`` (other than
  the ignore index) are an error naming the file, the value and the config
  key, in training and in evaluation, checked on each batch as it is
  loaded (a comparison per pixel; no file is read twice).
"""
import logging
import os
import os.path as osp
from typing import Iterator, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS

from fcvit_mm.internals import get_private
from .data_checks import DatasetError

LOOPS = (('train_dataloader', '_train_loop'), ('val_dataloader', '_val_loop'),
         ('test_dataloader', '_test_loop'))
FILE_KEYS = ('img_path', 'seg_map_path')


def built_dataloaders(runner) -> Iterator[Tuple[str, object]]:
    """(config key, dataloader) of the loops the runner has built (without
    building any other: the runner's private loop attributes hold a config
    until the public properties build the loop, see fcvit_mm.internals)."""
    from mmengine.runner import BaseLoop
    for key, attr in LOOPS:
        loop = get_private(runner, attr)
        if isinstance(loop, BaseLoop):
            yield key, loop.dataloader


def _inner_model(model):
    """The model inside mmengine's wrappers (DDP, ...) and inside a
    test-time-augmentation model (``tools/test.py --tta``)."""
    if is_model_wrapper(model):
        model = model.module
    if isinstance(model, BaseTTAModel):
        model = model.module
    return model


def _chain(dataset) -> Iterator[object]:
    """A dataset and the datasets it wraps (Repeat, ClassBalanced, Concat,
    MultiImageMix, ...)."""
    yield dataset
    for inner in getattr(dataset, 'datasets', None) or ():
        yield from _chain(inner)
    inner = getattr(dataset, 'dataset', None)
    if inner is not None:
        yield from _chain(inner)


def class_heads(model) -> Iterator[Tuple[str, int]]:
    """(config key, num_classes) of the model's classification heads (the
    RPN, which has one class by design, is not one)."""
    for name, module in _inner_model(model).named_modules():
        last = name.rstrip('.0123456789').split('.')[-1]
        num = getattr(module, 'num_classes', None)
        if last.endswith('head') and last != 'rpn_head' and \
                isinstance(num, int) and not isinstance(num, bool):
            yield f'model.{name}.num_classes', num


def check_num_classes(model, dataset, loader: str) -> None:
    """Raise :class:`DatasetError` if a head's ``num_classes`` is not the
    number of classes of ``dataset``; in evaluation, a head with more
    classes than the dataset (a model evaluated on a subset) is a
    warning."""
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    if not classes:
        return
    for key, num in class_heads(model):
        if num == len(classes):
            continue
        shown = ', '.join(map(str, classes[:8])) + \
            (', ...' if len(classes) > 8 else '')
        message = (f'{key}={num} does not match the {len(classes)} classes '
                   f'of {loader}.dataset ({type(dataset).__name__}: '
                   f'{shown})')
        if num > len(classes) and loader != 'train_dataloader':
            print_log(message, logger='current', level=logging.WARNING)
            continue
        raise DatasetError(
            f'{message}; set {key}={len(classes)}, or '
            f'{loader}.dataset.metainfo.classes to the {num} classes the '
            f'model predicts')


def _file_problem(results: dict) -> Optional[str]:
    for key in FILE_KEYS:
        path = results.get(key) if isinstance(results, dict) else None
        if not isinstance(path, str) or '://' in path:
            continue
        if not osp.exists(path):
            return f'{key} {path!r} does not exist'
        if osp.isfile(path) and os.stat(path).st_size == 0:
            return f'{key} {path!r} is an empty file (0 bytes)'
    return None


class NamingPipeline:
    """A dataset pipeline whose failures name the sample's files.

    An error that names the sample's file is left as it is; otherwise an
    empty or missing image / label map is a :class:`DatasetError` naming
    it, and any other error gets a note naming the sample's files (the
    error itself is kept).
    """

    def __init__(self, pipeline, loader: str):
        self.pipeline = pipeline
        self.loader = loader

    def __call__(self, results):
        try:
            return self.pipeline(results)
        except DatasetError:
            raise
        except Exception as e:
            files = {k: results[k] for k in FILE_KEYS
                     if isinstance(results, dict) and results.get(k)}
            if any(str(path) in str(e) for path in files.values()):
                raise  # it names the file already
            problem = _file_problem(results)
            if problem is not None:
                raise DatasetError(f'cannot load a sample of {self.loader}: '
                                   f'{problem}') from e
            if files:
                e.add_note(f'while loading {self.loader} sample ' + ', '.join(
                    f'{k}={v!r}' for k, v in files.items()))
            raise

    def __getattr__(self, name):
        if name == 'pipeline' or name.startswith('__'):
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self):
        return repr(self.pipeline)


def name_failed_files(dataset, loader: str) -> None:
    """Make the pipelines of ``dataset`` (and of the datasets it wraps)
    :class:`NamingPipeline`\\ s."""
    for ds in _chain(dataset):
        pipeline = getattr(ds, 'pipeline', None)
        if callable(pipeline) and not isinstance(pipeline, NamingPipeline):
            ds.pipeline = NamingPipeline(pipeline, loader)


def _samples(data_batch) -> Iterator[object]:
    samples = data_batch.get('data_samples') \
        if isinstance(data_batch, dict) else None
    for s in samples or ():
        if isinstance(s, (list, tuple)):  # test-time augmentation
            yield from s
        else:
            yield s


@HOOKS.register_module()
class DataCheckHook(Hook):
    """Check the data against the model as it is loaded (see the module
    doc). Cheap: one comparison per label-map pixel per batch."""

    priority = 'VERY_HIGH'

    def __init__(self):
        self._seg = None

    def before_run(self, runner) -> None:
        for loader, dataloader in built_dataloaders(runner):
            check_num_classes(runner.model, dataloader.dataset, loader)
            name_failed_files(dataloader.dataset, loader)
        head = getattr(_inner_model(runner.model), 'decode_head', None)
        if isinstance(getattr(head, 'num_classes', None), int):
            self._seg = (head.num_classes, getattr(head, 'ignore_index', 255))

    def check_label_maps(self, data_batch, loader: str) -> None:
        if self._seg is None:
            return
        num, ignore = self._seg
        for sample in _samples(data_batch):
            seg = getattr(sample, 'gt_sem_seg', None)
            if seg is None:
                continue
            labels = seg.data
            bad = ((labels >= num) | (labels < 0)) & (labels != ignore)
            if bool(bad.any()):
                values = labels[bad].unique()[:8].tolist()
                path = sample.metainfo.get('seg_map_path', '(unknown file)')
                reduced = ' after reduce_zero_label' if \
                    sample.metainfo.get('reduce_zero_label') else ''
                raise DatasetError(
                    f'label map {path!r} ({loader}) holds values {values}'
                    f'{reduced}, beyond model.decode_head.num_classes={num}: '
                    f'labels must be 0..{num - 1} or the ignore index '
                    f'{ignore} (model.decode_head.ignore_index)')

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.check_label_maps(data_batch, 'train_dataloader')

    def before_val_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.check_label_maps(data_batch, 'val_dataloader')

    def before_test_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.check_label_maps(data_batch, 'test_dataloader')
