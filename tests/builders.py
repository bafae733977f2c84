"""Configs and models shared by the task tests: the shipped configs shrunk
to run on a generated shapes dataset on a CPU, the detection options that
point a COCO config at one, and the builders that read them.

Nothing here imports mmpretrain, mmdet or mmseg at import time: a test
module skips itself (``pytest.importorskip``) when its library is absent."""
import os
import os.path as osp
import re
import runpy

from helpers import ROOT, find_transform

TOOLS = osp.join(ROOT, 'tools')
CLS_DIR = osp.join(ROOT, 'configs', 'classification')
DET_DIR = osp.join(ROOT, 'configs', 'detection')
MASKRCNN_B12 = osp.join(DET_DIR, 'maskrcnn_fcvit_b12.py')
RETINANET_B12 = osp.join(DET_DIR, 'retinanet_fcvit_b12.py')
#: the classes of the generated shapes datasets
CLASSES = ('circle', 'square', 'triangle')
#: the hooks configs/_base_/fcvit_runtime.py adds to every config: a config
#: that sets its own custom_hooks lists them too
OUR_HOOKS = runpy.run_path(
    osp.join(ROOT, 'configs', '_base_', 'fcvit_runtime.py'))['custom_hooks']


# --------------------------------------------------------------------------
# any task
# --------------------------------------------------------------------------
def as_dict(options):
    """'k=v' strings -> dict, parsed like the tools' --cfg-options."""
    import argparse

    from mmengine.config import DictAction
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    return parser.parse_args(['--o', *options]).o


def load_cfg(path, options=()):
    """The config at ``path`` with the --cfg-options ``options`` merged."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(as_dict(options))
    return cfg


def load_shipped(path, scope):
    """The shipped config ``path``, checked to run in the library ``scope``
    with fcvit_mm imported (so that the library's own tools can use it)."""
    cfg = load_cfg(path)
    assert cfg.default_scope == scope
    assert cfg.custom_imports == dict(imports=['fcvit_mm'],
                                      allow_failed_imports=False)
    return cfg


def checkpoint_weights(path):
    """The ``state_dict`` of the checkpoint file ``path``."""
    from fcvit_mm.models.checkpoint import safe_load
    return safe_load(path)['state_dict']


def local_loaders(cfg, data_root, train_batch, test_batch, **dataset):
    """Point the three data loaders of ``cfg`` at ``data_root`` (and set
    the ``dataset`` fields), loading in the main process, with
    ``train_batch`` / ``test_batch`` images a batch; validation runs the
    test pipeline."""
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[key]
        loader.dataset.data_root = data_root
        for field, value in dataset.items():
            loader.dataset[field] = value
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.batch_size = (train_batch if key == 'train_dataloader' else
                             test_batch)
    cfg.val_dataloader.dataset.pipeline = cfg.test_dataloader.dataset.pipeline


def dump_small(cfg, name, work_dir):
    """``cfg`` recording its run (TrainRecorderHook), seeded, working in
    ``work_dir``, written there as ``small_<name>``; the file's path."""
    cfg.custom_hooks = [dict(type='TrainRecorderHook')]
    cfg.randomness = dict(seed=0)
    cfg.work_dir = str(work_dir)
    os.makedirs(str(work_dir), exist_ok=True)
    path = osp.join(str(work_dir), 'small_' + name)
    cfg.dump(path)
    return path


def user_config(folder, base, module, hooks=(), extra=''):
    """A user's config ``folder/user_cfg.py``: ``base`` with the Python
    module ``module`` imported, OUR_HOOKS and ``hooks`` as custom_hooks,
    then the config lines ``extra``; its path."""
    path = osp.join(str(folder), 'user_cfg.py')
    with open(path, 'w') as f:
        f.write(f'_base_ = [{base!r}]\n'
                f"custom_imports = dict(imports=['fcvit_mm', {module!r}],\n"
                '                      allow_failed_imports=False)\n'
                f'custom_hooks = {OUR_HOOKS + list(hooks)!r}\n' + extra)
    return path


# --------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------
CLS_SIZE = 32  # training / test crops of the small classification runs


def small_classifier_config(name, data_root, work_dir, arch=None,
                            num_classes=3, save_checkpoint=False):
    """The shipped classification config ``name``, shrunk for a CPU: 32 x 32
    crops, 8 training images in batches of 4 (two iterations, one epoch),
    3 val images. The augmentations, loss, optimiser and schedule shape are
    the recipe's. Written into ``work_dir``; the file's path."""
    cfg = load_cfg(osp.join(CLS_DIR, name))
    find_transform(cfg.train_dataloader.dataset.pipeline,
                   'RandomResizedCrop').scale = CLS_SIZE
    test_pipe = cfg.test_dataloader.dataset.pipeline
    find_transform(test_pipe, 'ResizeEdge').scale = CLS_SIZE * 8 // 7
    find_transform(test_pipe, 'CenterCrop').crop_size = CLS_SIZE
    local_loaders(cfg, data_root, 4, 4, metainfo=dict(classes=CLASSES))
    if arch is not None:
        from fcvit_mm.models import FCViT
        cfg.model.backbone.arch = arch
        cfg.model.head.in_channels = FCViT.parse_arch(arch)['embed_dims'][3]
    cfg.model.head.num_classes = num_classes
    cfg.data_preprocessor.num_classes = num_classes
    if num_classes < 5:  # top-5 needs at least 5 classes
        cfg.val_evaluator.topk = cfg.test_evaluator.topk = (1, )
    cfg.train_cfg.max_epochs = 1
    # compress the warm-up to the first epoch (two iterations) so that the
    # second iteration runs at about half the peak lr
    for sched in cfg.param_scheduler:
        if sched.type == 'LinearLR':
            sched.end = 1
        else:
            sched.begin = 1
    cfg.default_hooks.logger.interval = 1
    ckpt = cfg.default_hooks.checkpoint
    ckpt.save_last = save_checkpoint
    ckpt.interval = 1 if save_checkpoint else 2
    if not save_checkpoint:
        ckpt.save_best = None
    return dump_small(cfg, name, work_dir)


# --------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------
DET_IMG = 64  # image side of the generated COCO sets and the test pipelines


def data_options(root, batch_size=2):
    """--cfg-options that point a COCO config at the generated dataset."""
    opts = []
    ann = osp.join(root, 'annotations', 'instances_val2017.json')
    for loader, split in (('train_dataloader', 'train2017'),
                          ('val_dataloader', 'val2017'),
                          ('test_dataloader', 'val2017')):
        opts += [
            f'{loader}.dataset.data_root={root}',
            f'{loader}.dataset.ann_file=annotations/instances_{split}.json',
            f'{loader}.dataset.data_prefix.img={split}/',
            f'{loader}.dataset.metainfo.classes=({",".join(CLASSES)})',
            f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False',
        ]
    size = f'({DET_IMG},{DET_IMG})'
    opts += [
        f'train_dataloader.batch_size={batch_size}',
        # train: Load, LoadAnnotations, Resize, Flip, Pack;
        # test: Load, Resize, LoadAnnotations, Pack
        f'train_dataloader.dataset.pipeline.2.scale={size}',
        f'val_dataloader.dataset.pipeline.1.scale={size}',
        f'test_dataloader.dataset.pipeline.1.scale={size}',
        f'val_evaluator.ann_file={ann}',
        f'test_evaluator.ann_file={ann}',
        'default_hooks.logger.interval=1',
        'param_scheduler.0.start_factor=1.0',  # no warm-up in 2 iterations
        'randomness.seed=0',
    ]
    return opts


def maskrcnn_options(root, **kwargs):
    """:func:`data_options` and a Mask R-CNN for the 3 classes, with fewer
    RoIs."""
    return data_options(root, **kwargs) + [
        f'model.roi_head.bbox_head.num_classes={len(CLASSES)}',
        f'model.roi_head.mask_head.num_classes={len(CLASSES)}',
        # fewer RoIs: the mask head dominates the cost on a CPU
        'model.train_cfg.rpn_proposal.max_per_img=200',
        'model.train_cfg.rcnn.sampler.num=64',
        'model.test_cfg.rpn.max_per_img=100',
        'model.test_cfg.rcnn.max_per_img=20',
        'model.test_cfg.rcnn.score_thr=0.0',  # keep detections when untrained
    ]


def retinanet_options(root, **kwargs):
    """:func:`data_options` and a RetinaNet for the 3 classes."""
    return data_options(root, **kwargs) + [
        f'model.bbox_head.num_classes={len(CLASSES)}',
        # an untrained RetinaNet scores ~0.01 (its prior): keep detections so
        # that the COCO evaluation has something to evaluate
        'model.test_cfg.score_thr=0.0',
        'model.test_cfg.max_per_img=20',
    ]


def build_model(cfg):
    """The detector of the mmdet config ``cfg``."""
    from mmengine.registry import init_default_scope

    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    return MODELS.build(cfg.model)


def reference_layout(sd):
    """An FCViT state dict of this project renamed to the reference's keys
    (the inverse of ``convert_reference_state_dict`` of
    fcvit_mm.models.checkpoint)."""
    out = {}
    for k, v in sd.items():
        m = re.match(r'^stages\.(\d+)\.blocks\.(\d+)\.(.*)$', k)
        if m:
            out[f'network.{2 * int(m[1])}.{m[2]}.{m[3]}'] = v
            continue
        m = re.match(r'^stages\.(\d+)\.downsample\.(.*)$', k)
        if m:
            out[f'network.{2 * int(m[1]) - 1}.{m[2]}'] = v
            continue
        m = re.match(r'^norm(\d)\.(.*)$', k)
        out[f'norm{2 * int(m[1])}.{m[2]}' if m else k] = v
    return out
