"""Segmentation: the Semantic FPN and UperNet configs on ADE20K.

Every config loads and builds with the recipe it documents, trains a couple
of iterations on a tiny generated ADE20K-format dataset (the real pipeline at
64 x 64 crops), reports mIoU, runs under ``dist_train.sh`` with two CPU
processes, and round-trips through mmseg's inference API with a checkpoint
written by our ``tools/train.py``.
"""
import copy
import fnmatch
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import fcvit_mm  # noqa: F401
from conftest import ROOT

mmseg = pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402
from builders import dump_small, load_shipped, local_loaders  # noqa: E402
# one_thread: an autouse fixture for this module
from helpers import (TrainRecorderHook, find_transform,  # noqa: E402
                     free_port, generated_shapes, one_thread)  # noqa: F401

SEG_DIR = osp.join(ROOT, 'configs', 'segmentation')
CONFIGS = {
    'fpn_fcvit_b12_ade20k.py': dict(arch='b12', head='FPNHead', iters=40000,
                                    batch=4, drop_path=0.),
    'fpn_fcvit_b24_ade20k.py': dict(arch='b24', head='FPNHead', iters=40000,
                                    batch=4, drop_path=0.),
    'upernet_fcvit_b12_ade20k.py': dict(arch='b12', head='UPerHead',
                                        iters=160000, batch=2, drop_path=0.2),
    'upernet_fcvit_b24_ade20k.py': dict(arch='b24', head='UPerHead',
                                        iters=160000, batch=2, drop_path=0.3),
}
# backbone-only parameter counts of the spec (four output norms)
DENSE_BACKBONE_PARAMS = {'b12': 14189856, 'b24': 26448256}
CROP = 32  # training crops; the generated images are 2 x CROP
# a small FCViT (the spec's mini reference arch) for the runs whose
# checkpoint no test reads: the heads, data pipeline and optimiser are those
# of the config, the backbone is cheap (the real variants are built above)
MINI_ARCH = dict(layers=[1, 1, 2, 1], embed_dims=[32, 64, 96, 128],
                 mlp_ratios=[8, 8, 4, 4])


# --------------------------------------------------------------------------
# data and small configs
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    return generated_shapes(tmp_path_factory, 'shapes_ade20k', 'ade20k',
                            num_train=4, num_val=2, img_size=2 * CROP, seed=0)


def small_config(name, data_root, work_dir, max_iters=2, arch=None,
                 pretrained=None, save_checkpoint=False):
    """The shipped config, shrunk for a CPU: 32 x 32 crops out of images
    randomly resized to 16..64 pixels, batch 2, ``max_iters`` iterations then
    validation at 32 x 32. Everything else (model, augmentations, optimiser,
    schedule shape) is the recipe. ``arch`` replaces the backbone (with the
    neck / head input widths to match)."""
    cfg = Config.fromfile(osp.join(SEG_DIR, name))
    crop = (CROP, CROP)
    train_pipe = cfg.train_dataloader.dataset.pipeline
    find_transform(train_pipe, 'RandomResize').scale = (2 * CROP, CROP)
    find_transform(train_pipe, 'RandomCrop').crop_size = crop
    test_pipe = cfg.test_dataloader.dataset.pipeline
    find_transform(test_pipe, 'Resize').scale = (2 * CROP, CROP)
    local_loaders(cfg, data_root, 2, 1)
    cfg.model.data_preprocessor.size = crop
    if arch is not None:
        from fcvit_mm.models import FCViT
        dims = FCViT.parse_arch(arch)['embed_dims']
        cfg.model.backbone.arch = arch
        if 'neck' in cfg.model:
            cfg.model.neck.in_channels = list(dims)
        else:
            cfg.model.decode_head.in_channels = list(dims)
        if 'auxiliary_head' in cfg.model:
            cfg.model.auxiliary_head.in_channels = dims[2]
    # as shipped, `pretrained = None`: tools/train.py starts from scratch
    if pretrained is not None:
        cfg.model.backbone.init_cfg.checkpoint = pretrained
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    # compress the schedule so that the few iterations see a real lr (the
    # UperNet warm-up starts at 1e-6 of it and would last 1500 iterations)
    for sched in cfg.param_scheduler:
        if sched.type == 'LinearLR':
            sched.end = max_iters
        else:
            sched.begin = min(sched.begin, max_iters)
            sched.end = 100
    cfg.default_hooks.logger.interval = 1
    # a checkpoint only where a test reads it (they are large: weights and
    # AdamW state)
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.default_hooks.checkpoint.save_last = save_checkpoint
    if not save_checkpoint:
        cfg.default_hooks.checkpoint.interval = max_iters + 1
    return dump_small(cfg, name, work_dir)


_TRAINED = {}
# the run whose checkpoint the test / inference tests use
CKPT_CONFIG = 'fpn_fcvit_b12_ade20k.py'


def train_small(name, data_root, tmp_root, ref_ckpt):
    """Train ``name`` for 2 iterations with tools/train.py (once per module).

    The config whose checkpoint other tests read runs as shipped (FCViT-B12
    from scratch); the others run the mini arch initialised from the
    reference's dense checkpoint, unconverted (``ref_ckpt``)."""
    if name not in _TRAINED:
        from tools.train import main as train_main
        work_dir = osp.join(tmp_root, name[:-3])
        real = name == CKPT_CONFIG
        path = small_config(name, data_root, work_dir,
                            arch=None if real else MINI_ARCH,
                            pretrained=None if real else ref_ckpt,
                            save_checkpoint=real)
        runner = train_main([path])
        hook = [h for h in runner.hooks
                if isinstance(h, TrainRecorderHook)][0]
        _TRAINED[name] = dict(config=path, work_dir=work_dir, hook=hook,
                              checkpoint=osp.join(work_dir, 'iter_2.pth'),
                              pretrained=not real)
    return _TRAINED[name]


@pytest.fixture(scope='module')
def train_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp('seg_train'))


@pytest.fixture(scope='module')
def ref_ckpt(tmp_path_factory, golden):
    """The spec's mini reference dense checkpoint, as the reference writes
    them (``network.*`` keys under ``state_dict``), for MINI_ARCH."""
    assert golden['arch'] == MINI_ARCH
    path = str(tmp_path_factory.mktemp('ref') / 'fcvit_mini_dense.pth.tar')
    torch.save({'state_dict': golden['dense']['state_dict']}, path)
    return path


# --------------------------------------------------------------------------
# configs: load, build, recipe
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_loads_and_builds(name):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    expect = CONFIGS[name]
    cfg = load_shipped(osp.join(SEG_DIR, name), 'mmseg')
    # the pretrained checkpoint is one top-level setting that the backbone uses
    assert 'pretrained' in cfg
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=cfg.pretrained, prefix='backbone.')
    assert cfg.model.backbone.type == 'FCViT'
    assert cfg.model.backbone.arch == expect['arch']
    assert cfg.model.backbone.drop_path_rate == expect['drop_path']
    assert cfg.model.decode_head.type == expect['head']
    assert cfg.model.decode_head.num_classes == 150
    # the reference's SyncBN in every head (reverted where it cannot work)
    heads = [cfg.model.decode_head] + (
        [cfg.model.auxiliary_head] if 'auxiliary_head' in cfg.model else [])
    for head in heads:
        assert head.norm_cfg.type == 'SyncBN', head.type
    assert cfg.model.data_preprocessor.size == (512, 512)
    assert find_transform(cfg.train_dataloader.dataset.pipeline,
                 'RandomCrop').crop_size == (512, 512)
    assert find_transform(cfg.train_dataloader.dataset.pipeline,
                 'LoadAnnotations').reduce_zero_label
    assert cfg.train_dataloader.batch_size == expect['batch']
    assert cfg.train_cfg.max_iters == expect['iters']
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    poly = [s for s in cfg.param_scheduler if s.type == 'PolyLR']
    assert len(poly) == 1 and poly[0].end == expect['iters']
    if expect['head'] == 'FPNHead':  # the reference's recipe
        assert cfg.optim_wrapper.optimizer.lr == 2e-4
        assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
        assert poly[0].power == 0.9 and poly[0].eta_min == 0
        assert cfg.auto_scale_lr.base_batch_size == 32
    else:  # the standard UperNet 160k schedule (Swin's recipe)
        opt = cfg.optim_wrapper.optimizer
        assert (opt.lr, opt.betas, opt.weight_decay) == \
            (6e-5, (0.9, 0.999), 0.01)
        warmup = [s for s in cfg.param_scheduler if s.type == 'LinearLR']
        assert len(warmup) == 1 and warmup[0].end == 1500
        assert poly[0].power == 1.0 and poly[0].begin == 1500
        assert cfg.auto_scale_lr.base_batch_size == 16
        assert 'auxiliary_head' in cfg.model

    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'EncoderDecoder'
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    assert n_backbone == DENSE_BACKBONE_PARAMS[expect['arch']]
    sync = [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.SyncBatchNorm)]
    assert sync and all(n.split('.')[0] in ('decode_head', 'auxiliary_head')
                        for n in sync), sync


def test_reference_checkpoint_unconverted_through_config(tmp_path, golden):
    """The config's ``pretrained`` accepts a reference dense checkpoint as
    published (``network.*`` keys, under ``state_dict``)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    path = str(tmp_path / 'fcvit_ref_dense.pth.tar')
    torch.save({'state_dict': golden['dense']['state_dict']}, path)
    cfg = Config.fromfile(osp.join(SEG_DIR, 'fpn_fcvit_b12_ade20k.py'))
    cfg.model.backbone.arch = golden['arch']
    cfg.model.neck.in_channels = list(golden['arch']['embed_dims'])
    cfg.model.backbone.init_cfg.checkpoint = path
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    with torch.no_grad():
        outs = model.backbone(golden['input'])
    for out, ref in zip(outs, golden['dense']['eval_output'], strict=True):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_upernet_no_decay_on_norms_biases_and_1d(ade_root, tmp_path):
    """UperNet's paramwise settings: weight decay only on >= 2-D weights."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(SEG_DIR, 'upernet_fcvit_b12_ade20k.py'))
    cfg.model.backbone.arch = 'tiny'
    cfg.model.decode_head.in_channels = [32, 64, 160, 320]
    cfg.model.auxiliary_head.in_channels = 160
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[id(p)] = group['weight_decay']
    names = dict(model.named_parameters())
    for name, p in names.items():
        want = 0.0 if p.ndim <= 1 else 0.01
        assert decay[id(p)] == want, (name, decay[id(p)])
    # the FCViT-specific 1-D parameters are among those exempted
    for key in ('layer_scale_1', 'rescale_weight', 'rescale_bias',
                'norm3.weight', 'patch_embed.norm.bias'):
        assert any(key in n and decay[id(p)] == 0 for n, p in names.items())


# --------------------------------------------------------------------------
# training, evaluation
# --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_trains_and_evaluates(name, ade_root, train_root, ref_ckpt,
                              golden):
    run = train_small(name, ade_root, train_root, ref_ckpt)
    hook = run['hook']
    if run['pretrained']:  # the reference checkpoint was loaded, unconverted
        from fcvit_mm.models import convert_reference_state_dict
        ref, _ = convert_reference_state_dict(golden['dense']['state_dict'])
        params = {k: v for k, v in ref.items()
                  if 'running_' not in k and 'num_batches' not in k}
        assert len(params) == sum(
            k.startswith('backbone.') for k in hook.before)
        for k, v in params.items():
            torch.testing.assert_close(hook.before[f'backbone.{k}'], v)
    assert len(hook.losses) == 2
    assert all(math.isfinite(x) and x > 0 for x in hook.losses)
    changed = [k for k in hook.before
               if not torch.equal(hook.before[k], hook.after[k])]
    # the backbone's first and last layers and the decode head all moved
    assert any(k.startswith('backbone.patch_embed') for k in changed)
    assert len(changed) > 0.9 * len(hook.before)
    assert any(k.startswith('backbone.stages.3') for k in changed)
    assert any(k.startswith('decode_head.conv_seg') for k in changed)
    assert hook.metrics, 'no validation ran'
    miou = hook.metrics[-1]['mIoU']
    assert 0.0 <= miou <= 100.0
    assert osp.isfile(run['checkpoint']) == (name == CKPT_CONFIG)


@pytest.mark.slow
def test_tools_test_reports_miou(ade_root, train_root, ref_ckpt, tmp_path):
    from tools.test import main as test_main
    run = train_small(CKPT_CONFIG, ade_root, train_root, ref_ckpt)
    show_dir = str(tmp_path / 'vis')
    metrics = test_main([run['config'], run['checkpoint'], '--work-dir',
                         str(tmp_path), '--show-dir', show_dir])
    assert set(metrics) >= {'aAcc', 'mIoU', 'mAcc'}
    assert 0.0 <= metrics['mIoU'] <= 100.0
    drawn = [f for _, _, fs in os.walk(show_dir) for f in fs
             if f.endswith('.png')]
    assert len(drawn) == 2  # one overlay per val image


@pytest.mark.slow
def test_dist_train_two_cpu_processes(ade_root, tmp_path):
    work_dir = tmp_path / 'dist'
    path = small_config('fpn_fcvit_b12_ade20k.py', ade_root, work_dir,
                        arch=MINI_ARCH, save_checkpoint=True)
    cfg = Config.fromfile(path)
    cfg.custom_hooks = []  # the recorder hook lives in this process only
    cfg.dump(path)
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), path, '2',
         '--work-dir', str(work_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = work_dir / 'iter_2.pth'
    assert ckpt.is_file()
    logs = [osp.join(dp, f) for dp, _, fs in os.walk(work_dir) for f in fs
            if f == 'scalars.json']
    assert logs, 'no scalars.json written'
    records = [json.loads(line) for line in open(logs[0])]
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any('mIoU' in r for r in records)
    text = proc.stdout + proc.stderr
    assert 'Distributed training: True' in text and 'GPU number: 2' in text


# --------------------------------------------------------------------------
# mmseg inference API on our config + a checkpoint from our train.py
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_inference_api(ade_root, train_root, ref_ckpt, tmp_path):
    import cv2
    from mmseg.apis import (MMSegInferencer, inference_model, init_model,
                            show_result_pyplot)
    run = train_small(CKPT_CONFIG, ade_root, train_root, ref_ckpt)
    # the shipped config; only the test resize is made smaller for a CPU
    # (the short side goes to 64 instead of 512)
    # (mmseg's inference_model reads the top-level test_pipeline, the
    # inferencer the test dataloader's)
    config = Config.fromfile(osp.join(SEG_DIR, CKPT_CONFIG))
    for pipeline in (config.test_pipeline,
                     config.test_dataloader.dataset.pipeline):
        find_transform(pipeline, 'Resize').scale = (128, 64)
    # an image whose sides are not multiples of 32, as a file and an array
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (75, 101, 3), dtype=np.uint8)
    img_path = str(tmp_path / 'odd.png')
    cv2.imwrite(img_path, img)
    val_img = osp.join(ade_root, 'images', 'validation',
                       sorted(os.listdir(osp.join(ade_root, 'images',
                                                  'validation')))[0])

    model = init_model(copy.deepcopy(config), run['checkpoint'],
                       device='cpu')
    assert len(model.dataset_meta['classes']) == 150
    state = torch.load(run['checkpoint'], map_location='cpu',
                       weights_only=True)['state_dict']
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], atol=0, rtol=0)
    # paths before arrays: mmseg 1.2's inference_model switches the model's
    # pipeline to LoadImageFromNDArray for good once it has seen an array
    res_path = inference_model(model, img_path)
    res_val = inference_model(model, val_img)
    assert tuple(res_val.pred_sem_seg.data.shape[-2:]) == (2 * CROP,
                                                           2 * CROP)
    res_arr = inference_model(model, img)
    for res in (res_path, res_arr):
        assert tuple(res.pred_sem_seg.data.shape[-2:]) == (75, 101)
        assert res.seg_logits.data.shape == (150, 75, 101)
    # the file and the array hold the same pixels (lossless PNG)
    torch.testing.assert_close(res_path.seg_logits.data,
                               res_arr.seg_logits.data)

    out_file = str(tmp_path / 'overlay.png')
    show_result_pyplot(model, img_path, res_path, show=False,
                       out_file=out_file)
    drawn = cv2.imread(out_file)
    assert drawn is not None and drawn.shape[:2] == (75, 101)

    inferencer = MMSegInferencer(model=copy.deepcopy(config),
                                 weights=run['checkpoint'], device='cpu')
    out_dir = str(tmp_path / 'inferencer')
    result = inferencer([img_path, img], out_dir=out_dir,
                        return_datasamples=False)
    preds = result['predictions']
    assert len(preds) == 2
    for pred in preds:
        assert pred.shape == (75, 101)
    assert np.array_equal(preds[0], res_path.pred_sem_seg.data[0].numpy())
    vis = [f for f in os.listdir(osp.join(out_dir, 'vis'))
           if f.endswith('.png') or f.endswith('.jpg')]
    assert len(vis) == 2
    for f in vis:
        assert cv2.imread(osp.join(out_dir, 'vis', f)) is not None


# --------------------------------------------------------------------------
# SyncBN (the reference's head norm) where it cannot work, and --tta
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name,expect', [('fpn_fcvit_b12_ade20k.py', 1),
                                         ('upernet_fcvit_b24_ade20k.py', 2)])
def test_sync_bn_reverted_for_cpu_distributed(name, expect):
    """The CPU-distributed path (init_cpu_distributed) builds the heads with
    BN: SyncBN raises in training under a gloo process group."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from fcvit_mm.engine.distributed import revert_sync_bn_cfg
    cfg = Config.fromfile(osp.join(SEG_DIR, name))
    cfg.sync_bn = 'torch'  # the runner's BN -> SyncBN conversion: dropped
    assert revert_sync_bn_cfg(cfg) == expect + 1
    assert not cfg.sync_bn
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert 'SyncBN' not in str(cfg.model)
    cfg.model.backbone.arch = 'tiny'
    cfg.model.neck = cfg.model.get('neck') and dict(
        cfg.model.neck, in_channels=[32, 64, 160, 320])
    if cfg.model.neck is None:
        cfg.model.pop('neck')
        cfg.model.decode_head.in_channels = [32, 64, 160, 320]
        cfg.model.auxiliary_head.in_channels = 160
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm)
                   for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d)
               for m in model.decode_head.modules())
    assert revert_sync_bn_cfg(cfg) == 0  # nothing left to change


def test_one_process_runner_reverts_sync_bn(ade_root, tmp_path):
    """A one-process run (any train.py: mmengine's runner) trains the heads
    with plain BN."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    path = small_config('upernet_fcvit_b12_ade20k.py', ade_root, tmp_path,
                        arch=MINI_ARCH)
    cfg = Config.fromfile(path)
    cfg.custom_hooks = []
    init_default_scope('mmseg')
    runner = Runner.from_cfg(cfg)
    kinds = {type(m).__name__ for m in runner.model.modules()}
    assert 'SyncBatchNorm' not in kinds and 'BatchNorm2d' in kinds


def test_tta_pipeline_is_multiscale_flip():
    """mmseg's ADE20K TTA: 6 scales of the single-scale size x 2 flips,
    every view resized to a multiple of 32, SegTTAModel."""
    cfg = Config.fromfile(osp.join(SEG_DIR, 'fpn_fcvit_b24_ade20k.py'))
    assert cfg.tta_model.type == 'SegTTAModel'
    load, tta = cfg.tta_pipeline
    assert load.type == 'LoadImageFromFile' and tta.type == 'TestTimeAug'
    scales, flips, multiple, annotations, pack = tta.transforms
    assert [t.scale for t in scales] == [
        (int(2048 * r), int(512 * r))
        for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    assert all(t.type == 'Resize' and t.keep_ratio for t in scales)
    assert sorted(t.prob for t in flips) == [0.0, 1.0]
    assert multiple == [dict(type='ResizeToMultiple', size_divisor=32)]
    assert annotations[0].reduce_zero_label
    assert pack[0].type == 'PackSegInputs'


def small_tta_config(path, tmp_path):
    """``path`` (a small config) with the TTA scales shrunk as its test
    resize is: (2 x CROP, CROP) x the same six ratios."""
    cfg = Config.fromfile(path)
    for t in cfg.tta_pipeline[1].transforms[0]:
        ratio = t.scale[1] / 512
        t.scale = (int(2 * CROP * ratio), int(CROP * ratio))
    cfg.custom_hooks = []  # the recorder hook lives in this process only
    out = str(tmp_path / ('tta_' + osp.basename(path)))
    cfg.dump(out)
    return out


def test_tta_views(ade_root, tmp_path):
    """Each val image gives 12 views, sides multiples of 32, half flipped."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    path = small_tta_config(
        small_config('fpn_fcvit_b12_ade20k.py', ade_root, tmp_path),
        tmp_path)
    cfg = Config.fromfile(path)
    init_default_scope('mmseg')
    dataset = DATASETS.build(
        dict(cfg.test_dataloader.dataset, pipeline=cfg.tta_pipeline))
    item = dataset[0]
    assert len(item['inputs']) == len(item['data_samples']) == 12
    assert all(x.shape[1] % 32 == 0 and x.shape[2] % 32 == 0
               for x in item['inputs'])
    assert len({tuple(x.shape) for x in item['inputs']}) > 1
    assert sum(s.flip for s in item['data_samples']) == 6


@pytest.mark.slow
def test_tta_through_mmseg_own_test_tool(ade_root, train_root, ref_ckpt,
                                         tmp_path):
    """mmseg's tools/test.py --tta on our config and a checkpoint of our
    train.py: the multi-scale + flip model evaluates mIoU."""
    tool = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'test.py')
    if not osp.isfile(tool):
        pytest.skip('this mmseg installation ships no tools/test.py')
    run = train_small(CKPT_CONFIG, ade_root, train_root, ref_ckpt)
    config = small_tta_config(run['config'], tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, tool, config, run['checkpoint'], '--tta',
         '--work-dir', str(tmp_path / 'work')],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    log = open(glob_one(tmp_path / 'work', '*.log')).read()
    # the model tested is SegTTAModel around ours
    model_cfg = log[log.index('\nmodel = dict('):][:100]
    assert 'module=dict(' in model_cfg, model_cfg
    assert re.search(r'Iter\(test\) \[2/2\].*mIoU: \d', log), log[-3000:]


def glob_one(folder, pattern):
    found = [osp.join(dp, f) for dp, _, fs in os.walk(str(folder))
             for f in fs if fnmatch.fnmatch(f, pattern)]
    assert len(found) == 1, found
    return found[0]
