"""Mixed-precision training on the CPU: ``type='AmpOptimWrapper'`` (what
``--amp`` of every OpenMMLab ``tools/train.py`` sets) builds without a GPU
and trains in bf16 autocast with float32 weights, every config family takes
a training step under it, the mmcv / mmdet pieces that refuse bf16 run in
float32, and a CPU without native bf16 trains in float32 and says why."""
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import fcvit_mm  # noqa: F401
from fcvit_mm.engine import mixed_precision as mp
from fcvit_mm.utils import cpu
from builders import (CLASSES, DET_DIR, load_cfg, maskrcnn_options,
                      retinanet_options)
# one_thread: an autouse fixture for this module
from helpers import (ROOT, generated_shapes, logged_records,  # noqa: F401
                     one_thread)

SEG_DIR = osp.join(ROOT, 'configs', 'segmentation')
CLS_DIR = osp.join(ROOT, 'configs', 'classification')
TINY_DIMS = [32, 64, 160, 320]
AMP = dict(type='AmpOptimWrapper', loss_scale='dynamic',
           optimizer=dict(type='SGD', lr=0.01))

CPUINFO_AMX = ('processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 '
               'amx_bf16 amx_tile amx_int8\n')
CPUINFO_OLD = 'processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n'


@pytest.fixture
def native_bf16(monkeypatch):
    """This process behaves as on a CPU with native bf16, whatever the
    machine."""
    monkeypatch.setenv(cpu.ENV, '1')


@pytest.fixture
def no_bf16(monkeypatch):
    """This process behaves as on a CPU without native bf16."""
    monkeypatch.setenv(cpu.ENV, '0')


# --------------------------------------------------------------------------
# what the CPU can do
# --------------------------------------------------------------------------
def test_bf16_support_read_from_cpu_flags(monkeypatch):
    monkeypatch.delenv(cpu.ENV, raising=False)
    assert cpu.cpu_flags(CPUINFO_AMX) >= {'amx_bf16', 'avx512_bf16'}
    amx = cpu.bf16_support(CPUINFO_AMX)
    assert amx.native and 'amx_bf16' in amx.reason
    old = cpu.bf16_support(CPUINFO_OLD)
    assert not old.native and 'avx512_bf16' in old.reason
    assert not cpu.bf16_support('').native  # no cpuinfo at all
    line = cpu.describe_cpu(CPUINFO_AMX)
    assert 'amx_tile+' in line and 'native bf16' in line
    assert 'avx512_bf16-' in cpu.describe_cpu(CPUINFO_OLD)
    monkeypatch.setenv(cpu.ENV, '0')
    assert not cpu.bf16_support(CPUINFO_AMX).native


# --------------------------------------------------------------------------
# the wrapper
# --------------------------------------------------------------------------
def _toy():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(2))


def _step(model, wrapper):
    """One update of ``model``; the conv's output dtype inside."""
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with wrapper.optim_context(model):
        loss = model(torch.randn(2, 3, 8, 8)).float().square().mean()
    wrapper.backward(loss)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    wrapper.step()
    return seen[0]


@pytest.mark.parametrize('scope', ['mmengine', 'mmdet', 'mmseg',
                                   'mmpretrain'])
def test_amp_optim_wrapper_trains_bf16_on_cpu(native_bf16, scope):
    """Built by name in every library's scope, as their --amp asks."""
    pytest.importorskip(scope)
    model = _toy()
    model(torch.randn(1, 3, 8, 8))  # materialise the lazy layer
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(model, dict(AMP))
    assert isinstance(wrapper, mp.AmpOptimWrapper) and wrapper.on_cpu
    before = [p.detach().clone() for p in model.parameters()]
    assert _step(model, wrapper) == torch.bfloat16
    for p, b in zip(model.parameters(), before):
        assert p.dtype == torch.float32
        assert not torch.equal(p, b)
    # nothing but the optimiser's state to save: resumable on a GPU too
    state = wrapper.state_dict()
    assert 'loss_scaler' not in state
    wrapper.load_state_dict(dict(state, loss_scaler={'scale': 2.0**16}))


def test_amp_without_native_bf16_trains_float32_and_says_why(no_bf16):
    model = _toy()
    model(torch.randn(1, 3, 8, 8))
    with logged_records() as records:
        wrapper = build_optim_wrapper(model, dict(AMP))
    assert _step(model, wrapper) == torch.float32
    said = ' '.join(r.getMessage() for r in records)
    assert 'float32' in said and cpu.ENV in said, said


def test_amp_on_cpu_refuses_float16(native_bf16):
    with pytest.raises(ValueError, match='bfloat16'):
        build_optim_wrapper(_toy(), dict(AMP, dtype='float16'))


# --------------------------------------------------------------------------
# float32 islands
# --------------------------------------------------------------------------
def test_nms_runs_under_cpu_autocast(native_bf16):
    """mmcv's CPU nms kernel takes float32 only; under autocast its boxes
    come in bf16."""
    from mmcv.ops import nms
    mp.install_float32_islands()
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.],
                          [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, 0.5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        _, keep_bf16 = nms(boxes.bfloat16(), scores.bfloat16(), 0.5)
    assert keep.tolist() == keep_bf16.tolist() == [0, 2]


def test_float32_island_is_the_function_outside_autocast():
    calls = []

    def f(x, xs):
        calls.append((x.dtype, xs[0].dtype, torch.is_autocast_enabled('cpu')))
        return x

    island = mp.float32_island(f)
    assert mp.float32_island(island) is island  # wrapped once
    x = torch.ones(2, dtype=torch.bfloat16)
    assert island(x, [x]) is x  # no autocast: untouched
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert island(x, [x]).dtype == torch.float32
    assert calls == [(torch.bfloat16, torch.bfloat16, False),
                     (torch.float32, torch.float32, False)]


# --------------------------------------------------------------------------
# every config family, one training step
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return generated_shapes(tmp_path_factory, 'amp_coco', 'coco',
                            num_train=2, num_val=1, img_size=64, seed=3)


def _det_batch(cfg):
    from mmengine.runner import Runner
    return next(iter(Runner.build_dataloader(cfg.train_dataloader)))


def _seg_batch():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for i in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64),
                                        ori_shape=(64, 64)))
        label = torch.zeros(1, 64, 64, dtype=torch.long)
        label[:, 8 * i:40, 16:48] = i + 1
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    inputs = [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
              for _ in range(2)]
    return dict(inputs=inputs, data_samples=samples)


def _cls_batch():
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    inputs = [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
              for _ in range(2)]
    return dict(inputs=inputs, data_samples=samples)


def _family(name, coco):
    """(scope, config, batch maker) of a config family, FCViT-tiny."""
    tiny = ['model.backbone.arch=tiny']
    if name == 'maskrcnn':
        cfg = load_cfg(osp.join(DET_DIR, 'maskrcnn_fcvit_b12.py'),
                       maskrcnn_options(coco, batch_size=1) + tiny + [
                           f'model.neck.in_channels={TINY_DIMS}'])
        return 'mmdet', cfg, lambda: _det_batch(cfg)
    if name == 'retinanet':
        cfg = load_cfg(osp.join(DET_DIR, 'retinanet_fcvit_b12.py'),
                       retinanet_options(coco, batch_size=1) + tiny + [
                           f'model.neck.in_channels={TINY_DIMS[1:]}'])
        return 'mmdet', cfg, lambda: _det_batch(cfg)
    if name == 'fpn':
        cfg = load_cfg(osp.join(SEG_DIR, 'fpn_fcvit_b12_ade20k.py'), tiny + [
            f'model.neck.in_channels={TINY_DIMS}',
            'model.data_preprocessor.size=(64,64)'])
        return 'mmseg', cfg, _seg_batch
    if name == 'upernet':
        cfg = load_cfg(osp.join(SEG_DIR, 'upernet_fcvit_b12_ade20k.py'),
                       tiny + [f'model.decode_head.in_channels={TINY_DIMS}',
                               'model.auxiliary_head.in_channels=160',
                               'model.data_preprocessor.size=(64,64)'])
        return 'mmseg', cfg, _seg_batch
    cfg = load_cfg(osp.join(CLS_DIR, 'fcvit_tiny_in1k.py'),
                   [f'model.head.num_classes={len(CLASSES)}',
                    f'data_preprocessor.num_classes={len(CLASSES)}'])
    cfg.model.train_cfg = None  # mixup / cutmix need 1000-class labels
    return 'mmpretrain', cfg, _cls_batch


@pytest.mark.parametrize('name', ['maskrcnn', 'retinanet', 'fpn', 'upernet',
                                  'classifier'])
def test_every_family_trains_a_bf16_step(native_bf16, coco, name):
    """Each shipped config family, FCViT-tiny: one training step under
    --amp's wrapper; the backbone's convolutions run in bf16, the loss is
    finite, the weights stay float32 and move."""
    scope, cfg, make_batch = _family(name, coco)
    pytest.importorskip(scope)
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(scope)
    data_pre = cfg.get('data_preprocessor')
    if data_pre is not None and 'data_preprocessor' not in cfg.model:
        cfg.model.data_preprocessor = data_pre
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
        wrapper = build_optim_wrapper(model, dict(AMP))
    seen = []
    model.backbone.patch_embed.proj.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    before = model.backbone.patch_embed.proj.weight.detach().clone()
    log_vars = model.train_step(make_batch(), wrapper)
    assert seen == [torch.bfloat16]
    assert all(math.isfinite(float(v.detach()) if torch.is_tensor(v) else v)
               for v in log_vars.values()), log_vars
    weight = model.backbone.patch_embed.proj.weight
    assert weight.dtype == torch.float32
    assert not torch.equal(weight, before)
    assert np.isfinite(weight.detach().numpy()).all()


def test_strided_conv_on_thin_map(native_bf16):
    """A strided 3x3 convolution on a map one pixel high gets the same
    weight gradient at every step under --amp's wrapper (torch's bf16
    kernel alone returns a different, wrong one each call)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1))
    wrapper = build_optim_wrapper(model, dict(AMP, optimizer=dict(
        type='SGD', lr=0.)))
    x = torch.randn(2, 32, 1, 1)
    grads = []
    for _ in range(4):
        with wrapper.optim_context(model):
            loss = model(x).float().sum()
        wrapper.backward(loss)
        grads.append(model[0].weight.grad.clone())
        wrapper.zero_grad()
    expected = torch.autograd.grad(nn.functional.conv2d(
        x, model[0].weight, model[0].bias, 2, 1).sum(), model[0].weight)[0]
    for g in grads:
        torch.testing.assert_close(g, expected)
    # the guard leaves autocast as it found it
    with wrapper.optim_context(model):
        model(x)
        assert torch.is_autocast_enabled('cpu')
