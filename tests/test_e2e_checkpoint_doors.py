"""One loading rule, whatever door a checkpoint comes in by.

The reference's published (timm-layout) checkpoints and whole-model
checkpoints of another FCViT variant, given to each library's own loaders:
mmengine's ``load_checkpoint``, mmpretrain's ``get_model(pretrained=)`` and
``inference_model``, mmdet's ``init_detector``, mmseg's ``init_model`` and
the libraries' own ``tools/test.py`` (as shipped in ``<lib>/.mim/tools``).
Each either loads the right weights or fails at once with an error that says
what does not fit (and names the converter for reference checkpoints);
none loads non-strictly into random weights."""
import importlib
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import one_thread  # noqa: F401
from mmengine.config import Config

from conftest import ROOT
from builders import (CLASSES, RETINANET_B12, build_model, load_cfg,
                      reference_layout, retinanet_options)

CONVERTER = 'fcvit_to_mm.py'
TINY_RETINA = ['model.backbone.arch=tiny',
               'model.neck.in_channels=[64,160,320]',
               f'model.bbox_head.num_classes={len(CLASSES)}']
SEG_FPN_B12 = osp.join(ROOT, 'configs', 'segmentation',
                       'fpn_fcvit_b12_ade20k.py')
CLS_TINY = osp.join(ROOT, 'configs', 'classification', 'fcvit_tiny_in1k.py')


def library_tool(lib, name='test.py'):
    """A library's own tool, as its wheel ships it."""
    path = osp.join(osp.dirname(importlib.import_module(lib).__file__),
                    '.mim', 'tools', name)
    assert osp.isfile(path), path
    return path


def run_tool(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, *cmd], cwd=str(tmp_path), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    # the error's last lines, for the log of the test run
    print('\n'.join(res.stdout.strip().splitlines()[-6:]))
    return res


def save(path, state_dict):
    torch.save({'state_dict': state_dict, 'meta': {}}, str(path))
    return str(path)


def randomised(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def classification_reference_layout(state_dict):
    """An mmpretrain FCViT classifier's weights in the reference's timm
    layout: network.*, patch_embed.*, norm.*, head.* at the top level."""
    bb = {k[len('backbone.'):]: v for k, v in state_dict.items()
          if k.startswith('backbone.')}
    out = {('norm.' + k[len('norm6.'):] if k.startswith('norm6.') else k): v
           for k, v in reference_layout(bb).items()}
    out.update({'head.' + k[len('head.fc.'):]: v
                for k, v in state_dict.items() if k.startswith('head.fc.')})
    return out


# --------------------------------------------------------------------------
# mmdet
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def b12_detector_ckpt(tmp_path_factory):
    """A whole RetinaNet checkpoint of FCViT-B12 (for a tiny config)."""
    cfg = load_cfg(RETINANET_B12, ['model.bbox_head.num_classes=3'])
    path = tmp_path_factory.mktemp('b12det') / 'retinanet_b12.pth'
    return save(path, build_model(cfg).state_dict())


def test_init_detector_refuses_another_variant(b12_detector_ckpt):
    from mmdet.apis import init_detector
    cfg = load_cfg(RETINANET_B12, TINY_RETINA)
    with pytest.raises(RuntimeError) as e:
        init_detector(cfg, b12_detector_ckpt, device='cpu')
    assert 'does not fit this FCViT' in str(e.value)
    assert 'another variant' in str(e.value)


# the file holds a backbone only: mmdet says it falls back to COCO's classes
@pytest.mark.filterwarnings('ignore:dataset_meta or class names are not saved')
def test_init_detector_reference_backbone_layout(tmp_path):
    """A detector checkpoint whose backbone is in the reference's layout (as
    its mmdet 2.x training wrote them) loads, renamed."""
    from mmdet.apis import init_detector
    cfg = load_cfg(RETINANET_B12, TINY_RETINA)
    src = randomised(build_model(cfg))
    sd = {k: v for k, v in src.state_dict().items()
          if not k.startswith('backbone.')}
    sd.update({'backbone.' + k: v for k, v in
               reference_layout(src.backbone.state_dict()).items()})
    assert any(k.startswith('backbone.network.') for k in sd)
    model = init_detector(cfg, save(tmp_path / 'ref_det.pth', sd),
                          device='cpu')
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.slow
def test_mmdet_tools_test_refuses_another_variant(b12_detector_ckpt,
                                                  tmp_path):
    from fcvit_mm.datasets import make_shapes_dataset
    root = str(tmp_path / 'coco')
    make_shapes_dataset(root, fmt='coco', num_train=1, num_val=1, img_size=64,
                        seed=0)
    res = run_tool([library_tool('mmdet'), RETINANET_B12, b12_detector_ckpt,
                    '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    *retinanet_options(root), *TINY_RETINA], tmp_path)
    assert res.returncode != 0, res.stdout[-3000:]
    assert 'does not fit this FCViT' in res.stdout, res.stdout[-3000:]
    assert 'another variant' in res.stdout
    assert not re.search(r'bbox_mAP: \d', res.stdout)


# --------------------------------------------------------------------------
# mmseg
# --------------------------------------------------------------------------
def seg_tiny_cfg(data_root=None):
    cfg = Config.fromfile(SEG_FPN_B12)
    cfg.model.backbone.arch = 'tiny'
    cfg.model.neck.in_channels = [32, 64, 160, 320]
    if data_root is not None:
        for key in ('val_dataloader', 'test_dataloader'):
            cfg[key].dataset.data_root = data_root
            cfg[key].num_workers = 0
            cfg[key].persistent_workers = False
    return cfg


@pytest.fixture(scope='module')
def b12_segmentor_ckpt(tmp_path_factory):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(SEG_FPN_B12).model)
    path = tmp_path_factory.mktemp('b12seg') / 'fpn_b12.pth'
    return save(path, model.state_dict())


def test_mmseg_init_model_refuses_another_variant(b12_segmentor_ckpt):
    from mmseg.apis import init_model
    with pytest.raises(RuntimeError, match='another variant'):
        init_model(seg_tiny_cfg(), b12_segmentor_ckpt, device='cpu')


@pytest.mark.slow
def test_mmseg_tools_test_refuses_another_variant(b12_segmentor_ckpt,
                                                  tmp_path):
    from fcvit_mm.datasets import make_shapes_dataset
    info = make_shapes_dataset(str(tmp_path / 'ade'), fmt='ade20k',
                               num_train=1, num_val=1, img_size=64, seed=0)
    cfg_path = str(tmp_path / 'fpn_tiny.py')
    seg_tiny_cfg(info['root']).dump(cfg_path)
    res = run_tool([library_tool('mmseg'), cfg_path, b12_segmentor_ckpt,
                    '--work-dir', str(tmp_path / 'w')], tmp_path)
    assert res.returncode != 0, res.stdout[-3000:]
    assert 'does not fit this FCViT' in res.stdout, res.stdout[-3000:]
    assert not re.search(r'mIoU: \d', res.stdout)


# --------------------------------------------------------------------------
# mmpretrain (and mmengine's load_checkpoint)
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def reference_classifier(tmp_path_factory):
    """A tiny FCViT classifier's weights as the reference publishes them
    (timm layout), and the classifier they came from."""
    from mmpretrain.apis import get_model
    model = randomised(get_model(CLS_TINY, device='cpu'))
    ref = classification_reference_layout(model.state_dict())
    path = tmp_path_factory.mktemp('refcls') / 'fcvit_tiny.pth.tar'
    torch.save({'state_dict': ref, 'epoch': 300}, str(path))
    return str(path), model


def test_get_model_with_reference_checkpoint_names_converter(
        reference_classifier, tmp_path):
    from mmengine.runner import load_checkpoint
    from mmpretrain.apis import get_model

    from tools.model_converters.fcvit_to_mm import main as convert
    src, source_model = reference_classifier
    with pytest.raises(RuntimeError) as e:
        get_model(CLS_TINY, pretrained=src, device='cpu')
    assert CONVERTER in str(e.value)
    model = get_model(CLS_TINY, device='cpu')
    with pytest.raises(RuntimeError, match=CONVERTER):
        load_checkpoint(model, src)
    # converted, it is the source model, tensor for tensor
    dst = str(tmp_path / 'fcvit_tiny_mm.pth')
    convert([src, dst])
    model = get_model(CLS_TINY, pretrained=dst, device='cpu')
    for k, v in source_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_inference_model_with_reference_checkpoint_names_converter(
        reference_classifier):
    from mmpretrain.apis import inference_model

    from fcvit_mm.utils.model_index import register_model_index
    assert register_model_index()
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3),
                                            dtype=np.uint8)
    with pytest.raises(RuntimeError, match=CONVERTER):
        inference_model('fcvit-tiny_8xb128_in1k', img,
                        pretrained=reference_classifier[0], device='cpu')


def test_load_checkpoint_reference_layout_into_backbone(golden, tmp_path):
    """mmengine's load_checkpoint of the reference's dense checkpoint into a
    bare backbone, or under ``backbone.`` into a model: renamed, exact."""
    from mmengine.runner import load_checkpoint

    from fcvit_mm.models import FCViT
    ref = golden['dense']['state_dict']
    bare = FCViT(arch=golden['arch'])
    load_checkpoint(bare, save(tmp_path / 'bare.pth', ref))
    parent = torch.nn.Module()
    parent.backbone = FCViT(arch=golden['arch'])
    load_checkpoint(parent, save(tmp_path / 'nested.pth',
                                 {'backbone.' + k: v for k, v in ref.items()}))
    for model in (bare, parent.backbone):
        model.eval()
        with torch.no_grad():
            outs = model(golden['input'])
        for out, expected in zip(outs, golden['dense']['eval_output'],
                                 strict=True):
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_mmpretrain_tools_test_reference_checkpoint_names_converter(
        reference_classifier, tmp_path):
    from fcvit_mm.datasets import make_shapes_dataset
    root = make_shapes_dataset(str(tmp_path / 'inet'), fmt='imagenet',
                               num_train=1, num_val=1, img_size=64,
                               seed=0)['root']
    cfg = Config.fromfile(CLS_TINY)
    cfg.test_dataloader.dataset.data_root = root
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    cfg_path = str(tmp_path / 'cls_tiny.py')
    cfg.dump(cfg_path)
    res = run_tool([library_tool('mmpretrain'), cfg_path,
                    reference_classifier[0], '--work-dir',
                    str(tmp_path / 'w')], tmp_path)
    assert res.returncode != 0, res.stdout[-3000:]
    assert CONVERTER in res.stdout, res.stdout[-3000:]
    assert not re.search(r'accuracy/top1: \d', res.stdout)


def test_a_few_missing_keys_stay_a_warning(golden, tmp_path):
    import logging

    from mmengine.runner import load_checkpoint

    from fcvit_mm.models import FCViT
    ref = dict(golden['dense']['state_dict'])
    del ref['norm0.weight'], ref['norm0.bias']
    logger = logging.getLogger('fcvit_doors')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        load_checkpoint(FCViT(arch=golden['arch']),
                        save(tmp_path / 'few.pth', ref), logger=logger)
    finally:
        logger.removeHandler(handler)
    text = '\n'.join(r.getMessage() for r in records)
    assert 'missing keys' in text and 'norm0.weight' in text
