"""Classification: the ImageNet-1K configs for FCViT in mmpretrain.

Every config loads and builds with the spec's exact parameter count and the
reference recipe; each variant trains a couple of iterations on a tiny
generated ImageNet-style folder dataset with the full augmentation pipeline
(RandAugment, random erasing, Mixup / CutMix, label smoothing) and reports
top-1; the optimiser skips weight decay where the recipe says; a converted
reference checkpoint evaluates through tools/test.py with the reference's
logits; mmpretrain's inference API works on a checkpoint from our train.py.
"""
import math
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fcvit_mm  # noqa: F401
from conftest import ROOT

mmpretrain = pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402
from builders import CLASSES, CLS_DIR, CLS_SIZE  # noqa: E402
from builders import load_shipped, small_classifier_config  # noqa: E402
# one_thread: an autouse fixture for this module
from helpers import (TrainRecorderHook, find_transform,  # noqa: E402
                     generated_shapes, one_thread)  # noqa: F401

CONFIGS = {
    'fcvit_tiny_in1k.py': dict(arch='tiny', params=4784752, width=320,
                               drop_path=0.1, short_side=248),
    'fcvit_b12_in1k.py': dict(arch='b12', params=14701832, width=512,
                              drop_path=0.1, short_side=248),
    'fcvit_b24_in1k.py': dict(arch='b24', params=26960232, width=512,
                              drop_path=0.1, short_side=235),
    'fcvit_b48_in1k.py': dict(arch='b48', params=51477032, width=512,
                              drop_path=0.2, short_side=235),
}


@pytest.fixture(scope='module')
def imagenet_root(tmp_path_factory):
    return generated_shapes(tmp_path_factory, 'shapes_imagenet', 'imagenet',
                            num_train=8, num_val=3, img_size=2 * CLS_SIZE,
                            seed=0)


_TRAINED = {}
CKPT_CONFIG = 'fcvit_tiny_in1k.py'  # its checkpoint feeds the inference test


def train_small(name, data_root, tmp_root, extra_args=()):
    if name not in _TRAINED:
        from tools.train import main as train_main
        work_dir = osp.join(tmp_root, name[:-3])
        path = small_classifier_config(name, data_root, work_dir,
                                       save_checkpoint=name == CKPT_CONFIG)
        runner = train_main([path, *extra_args])
        hook = [h for h in runner.hooks
                if isinstance(h, TrainRecorderHook)][0]
        _TRAINED[name] = dict(config=path, work_dir=work_dir, hook=hook,
                              checkpoint=osp.join(work_dir, 'epoch_1.pth'))
    return _TRAINED[name]


@pytest.fixture(scope='module')
def train_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp('cls_train'))


def _build(cfg):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(cfg.model)


# --------------------------------------------------------------------------
# configs: load, build, exact parameter counts, recipe
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_loads_builds_and_counts(name):
    expect = CONFIGS[name]
    cfg = load_shipped(osp.join(CLS_DIR, name), 'mmpretrain')
    bb = cfg.model.backbone
    assert (bb.type, bb.arch, tuple(bb.out_indices)) == ('FCViT',
                                                         expect['arch'],
                                                         (3, ))
    assert bb.layer_scale_init_value == 1e-5
    assert bb.drop_path_rate == expect['drop_path']
    assert cfg.model.neck.type == 'GlobalAveragePooling'
    assert cfg.model.head.type == 'LinearClsHead'
    assert cfg.model.head.num_classes == 1000
    assert cfg.model.head.loss == dict(
        type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert cfg.model.train_cfg.augments == [
        dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]
    # training pipeline: timm's rand-m9-mstd0.5-inc1, erasing 0.25
    train = cfg.train_dataloader.dataset.pipeline
    ra = find_transform(train, 'RandAugment')
    assert (ra.policies, ra.num_policies, ra.magnitude_level,
            ra.magnitude_std) == ('timm_increasing', 2, 9, 0.5)
    assert find_transform(train, 'RandomErasing').erase_prob == 0.25
    assert find_transform(train,
                          'RandomResizedCrop').interpolation == 'bicubic'
    # test pipeline: short side 224 / crop ratio, bicubic, centre crop 224
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        test = loader.dataset.pipeline
        edge = find_transform(test, 'ResizeEdge')
        assert (edge.scale, edge.edge, edge.interpolation) == (
            expect['short_side'], 'short', 'bicubic')
        assert find_transform(test, 'CenterCrop').crop_size == 224
    # schedule: 300 epochs, 8 x 128, AdamW 1e-3 @ 1024, cosine, 5 warm-up
    assert cfg.train_dataloader.batch_size == 128
    assert cfg.auto_scale_lr.base_batch_size == 1024
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-3, 0.05)
    assert cfg.train_cfg.max_epochs == 300
    warm, cos = cfg.param_scheduler
    assert (warm.type, warm.end, warm.by_epoch) == ('LinearLR', 5, True)
    assert (cos.type, cos.begin, cos.end) == ('CosineAnnealingLR', 5, 300)

    model = _build(cfg)
    assert type(model).__name__ == 'ImageClassifier'
    assert sum(p.numel() for p in model.parameters()) == expect['params']
    assert model.head.fc.in_features == expect['width']


def test_optimizer_skips_decay_on_biases_norms_and_1d():
    """Inspect the optimiser that the config builds: weight decay 0.05 on
    conv / linear weights only, 0 on every bias, norm and 1-D parameter."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(CLS_DIR, 'fcvit_b12_in1k.py'))
    model = _build(cfg)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    for group in wrapper.optimizer.param_groups:
        assert group['lr'] == 1e-3
        for p in group['params']:
            assert id(p) not in decay
            decay[id(p)] = group['weight_decay']
    named = dict(model.named_parameters())
    assert len(decay) == len(named)
    zero, full = [], []
    for name, p in named.items():
        (zero if decay[id(p)] == 0 else full).append(name)
        # timm's rule: no decay for 1-D parameters and biases
        want = 0.0 if (p.ndim <= 1 or name.endswith('.bias')) else 0.05
        assert decay[id(p)] == want, (name, decay[id(p)])
    for key in ('.layer_scale_1', '.layer_scale_2', '.rescale_weight',
                '.rescale_bias', 'norm1.weight', 'norm2.bias',
                'patch_embed.norm.weight', 'downsample.norm.bias',
                'backbone.norm3.weight', 'head.fc.bias', 'dw1.bias'):
        assert any(n.endswith(key) for n in zero), key
    for key in ('patch_embed.proj.weight', 'dw1.weight', 'gc1.fc1.weight',
                'channel_mixer.fc1.weight', 'head.fc.weight'):
        assert any(n.endswith(key) for n in full), key


# --------------------------------------------------------------------------
# training, evaluation
# --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_trains_and_evaluates(name, imagenet_root, train_root):
    # one run also checks --auto-scale-lr: batch 4 -> lr 1e-3 * 4 / 1024
    extra = ('--auto-scale-lr', ) if name == 'fcvit_b12_in1k.py' else ()
    run = train_small(name, imagenet_root, train_root, extra)
    hook = run['hook']
    assert len(hook.losses) == 2
    assert all(math.isfinite(x) and x > 0 for x in hook.losses)
    want_lr = 1e-3 * 4 / 1024 if extra else 1e-3
    assert hook.base_lr == pytest.approx(want_lr)
    changed = [k for k in hook.before
               if not torch.equal(hook.before[k], hook.after[k])]
    assert len(changed) > 0.9 * len(hook.before)
    assert any(k.startswith('backbone.patch_embed') for k in changed)
    assert 'head.fc.weight' in changed
    assert hook.metrics, 'no validation ran'
    top1 = hook.metrics[-1]['accuracy/top1']
    assert 0.0 <= top1 <= 100.0
    assert osp.isfile(run['checkpoint']) == (name == CKPT_CONFIG)


def test_full_augmentation_pipeline_runs(imagenet_root):
    """The training pipeline really applies its random transforms and the
    batch augmentations produce mixed soft targets."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed
    from mmpretrain.registry import DATASETS
    # the draws fixed (at 32 x 32 a CutMix box can round to nothing: which
    # draw does depended on the tests run before)
    set_random_seed(0)
    cfg = Config.fromfile(small_classifier_config(
        'fcvit_tiny_in1k.py', imagenet_root,
        osp.join(imagenet_root, 'aug_cfg')))
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    names = [t.__class__.__name__ for t in dataset.pipeline.transforms]
    assert names == ['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip',
                     'RandAugment', 'RandomErasing', 'PackInputs']
    a, b = dataset[0]['inputs'], dataset[0]['inputs']
    assert a.shape == (3, CLS_SIZE, CLS_SIZE) and not torch.equal(a, b)
    cfg.model.data_preprocessor = cfg.data_preprocessor
    model = _build(cfg)
    mixed = False
    for _ in range(5):  # one draw may leave the batch as it was
        batch = pseudo_collate([dataset[i] for i in range(4)])
        out = model.data_preprocessor(batch, training=True)
        scores = torch.stack([s.gt_score for s in out['data_samples']])
        assert scores.shape == (4, 3)
        torch.testing.assert_close(scores.sum(1), torch.ones(4))
        mixed = mixed or bool((scores.max(1).values < 1).any())
    assert mixed, 'no Mixup / CutMix applied in 5 batches'


# --------------------------------------------------------------------------
# a converted reference checkpoint through tools/test.py
# --------------------------------------------------------------------------
def test_converted_reference_checkpoint_evaluates(golden, imagenet_root,
                                                  tmp_path):
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.apis import get_model
    from mmpretrain.registry import DATASETS

    from fcvit_mm.models import FCViT
    from tools.model_converters.fcvit_to_mm import main as convert_main
    from tools.test import main as test_main

    ref = golden['classification']
    src = str(tmp_path / 'fcvit_mini.pth.tar')
    torch.save({'state_dict': ref['state_dict'], 'epoch': 300}, src)
    dst = str(tmp_path / 'fcvit_mini_mm.pth')
    convert_main([src, dst])

    path = small_classifier_config('fcvit_b12_in1k.py', imagenet_root,
                                   tmp_path / 'work', arch=golden['arch'],
                                   num_classes=10)
    # 1) the shipped recipe's model with the converted weights gives the
    #    reference's logits on the reference input
    model = get_model(path, pretrained=dst, device='cpu')
    with torch.no_grad():
        logits = model(golden['input'], mode='tensor')
    torch.testing.assert_close(logits, ref['eval_output'], atol=1e-5,
                               rtol=0)

    # 2) tools/test.py evaluates it (top-1) and its predictions are those of
    #    the backbone loaded directly from the unconverted file + the head
    out = str(tmp_path / 'preds.pkl')
    metrics = test_main([path, dst, '--work-dir', str(tmp_path / 'test'),
                         '--out', out])
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    cfg = Config.fromfile(path)
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    assert len(preds) == len(dataset) == 3  # num_val
    backbone = FCViT(arch=golden['arch'], out_indices=(3, ),
                     init_cfg=dict(type='Pretrained', checkpoint=src))
    backbone.init_weights()
    backbone.eval()
    weight = ref['state_dict']['head.weight']
    bias = ref['state_dict']['head.bias']
    batch = model.data_preprocessor(
        pseudo_collate([dataset[i] for i in range(len(dataset))]), False)
    with torch.no_grad():
        direct = F.linear(backbone(batch['inputs'])[0].mean((2, 3)), weight,
                          bias)
    dumped = torch.stack([p['pred_score'] for p in preds])
    torch.testing.assert_close(dumped, direct.softmax(1), atol=1e-5, rtol=0)
    labels = torch.tensor([p['gt_label'].item() for p in preds])
    top1 = (direct.argmax(1) == labels).float().mean().item() * 100
    assert metrics['accuracy/top1'] == pytest.approx(top1)


# --------------------------------------------------------------------------
# mmpretrain inference API with our config and a checkpoint from train.py
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_inference_api(imagenet_root, train_root, tmp_path):
    import cv2
    from mmpretrain.apis import (ImageClassificationInferencer, get_model,
                                 inference_model)
    run = train_small(CKPT_CONFIG, imagenet_root, train_root)
    # the shipped config (real 224 test pipeline), with the 3 classes of the
    # checkpoint
    config = Config.fromfile(osp.join(CLS_DIR, CKPT_CONFIG))
    config.model.head.num_classes = 3
    config.data_preprocessor.num_classes = 3

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (75, 101, 3), dtype=np.uint8)  # odd sizes
    img_path = str(tmp_path / 'odd.png')
    cv2.imwrite(img_path, img)
    val_img = sorted(osp.join(dp, f)
                     for dp, _, fs in os.walk(osp.join(imagenet_root, 'val'))
                     for f in fs)[0]

    inferencer = ImageClassificationInferencer(
        model=config, pretrained=run['checkpoint'], device='cpu')
    assert tuple(inferencer.classes) == CLASSES
    results = inferencer([img_path, img, val_img])
    assert len(results) == 3
    for res in results:
        assert res['pred_class'] in CLASSES
        assert res['pred_class'] == CLASSES[res['pred_label']]
        assert res['pred_scores'].shape == (3, )
        assert res['pred_scores'].sum() == pytest.approx(1.0, abs=1e-5)
        assert res['pred_score'] == pytest.approx(res['pred_scores'].max())
    # the file and the array hold the same pixels (lossless PNG)
    np.testing.assert_allclose(results[0]['pred_scores'],
                               results[1]['pred_scores'], atol=1e-6)

    model = get_model(config, pretrained=run['checkpoint'], device='cpu')
    state = torch.load(run['checkpoint'], map_location='cpu',
                       weights_only=True)['state_dict']
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], atol=0, rtol=0)
    assert tuple(model._dataset_meta['classes']) == CLASSES

    # by name, through configs/classification/metafile.yml registered with
    # mmpretrain's ModelHub (what inference_model needs to pick its task)
    from mmpretrain.apis import list_models

    from fcvit_mm.utils.model_index import register_model_index
    assert register_model_index()
    assert set(list_models('fcvit*')) >= {
        f'fcvit-{v}_8xb128_in1k' for v in ('tiny', 'b12', 'b24', 'b48')}
    model = get_model('fcvit-tiny_8xb128_in1k', pretrained=run['checkpoint'],
                      device='cpu', head=dict(num_classes=3))
    res = inference_model(model, val_img)
    assert res['pred_class'] in CLASSES
    np.testing.assert_allclose(res['pred_scores'], results[2]['pred_scores'],
                               atol=1e-6)
    res = inference_model(model, img)
    np.testing.assert_allclose(res['pred_scores'], results[1]['pred_scores'],
                               atol=1e-6)


def test_metafile_matches_configs():
    """The model index names every config with the spec's numbers."""
    import yaml
    with open(osp.join(CLS_DIR, 'metafile.yml')) as f:
        index = yaml.safe_load(f)
    by_config = {osp.basename(m['Config']): m for m in index['Models']}
    assert set(by_config) == set(CONFIGS)
    top1 = {'tiny': 74.9, 'b12': 80.9, 'b24': 82.5, 'b48': 83.6}
    for name, expect in CONFIGS.items():
        meta = by_config[name]
        assert meta['Metadata']['Parameters'] == expect['params']
        assert meta['Results'][0]['Metrics']['Top 1 Accuracy'] == top1[
            expect['arch']]


@pytest.mark.slow
def test_model_index_registered_on_import():
    """Importing fcvit_mm after mmpretrain (as a config's custom_imports
    does) makes the FCViT models known by name."""
    import subprocess
    import sys
    code = ('import mmpretrain, fcvit_mm\n'
            'from mmpretrain import list_models\n'
            'names = list_models("fcvit*")\n'
            'assert "fcvit-b12_8xb128_in1k" in names, names\n')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT)
