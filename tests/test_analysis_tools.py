"""tools/analysis: get_flops (hand count of one block), benchmark,
kernel_floor, plot_curves, visualize_similarity, and the shared code in
tools.analysis.lib."""
import json
import os.path as osp
from unittest import mock

import numpy as np
import pytest
import torch

import fcvit_mm  # noqa: F401
from tools.analysis.lib import measure
from tools.analysis.lib.models import build_backbone, parse_fcvit_name
from fcvit_mm.models import FCViT
from fcvit_mm.models.backbones.fcvit import FCViTBlock
# one_thread: an autouse fixture for this module
from helpers import load_tool, one_thread  # noqa: F401


def _load(name):
    return load_tool('analysis/' + name)


get_flops = _load('get_flops')
benchmark = _load('benchmark')
kernel_floor = _load('kernel_floor')
plot_curves = _load('plot_curves')
visualize = _load('visualize_similarity')

CLS_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)
data_preprocessor = dict(num_classes=5, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='FCViT', arch='tiny', out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=5, in_channels=320,
              loss=dict(type='CrossEntropyLoss')))
"""


@pytest.fixture(autouse=True)
def _allocator_untouched(monkeypatch):
    """Leave glibc's allocator settings alone in the test process."""
    monkeypatch.setattr(measure, 'PIN_MMAP_THRESHOLD', False)


@pytest.fixture(autouse=True)
def _threads_restored():
    """The measuring tools set the thread count: restore it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def cls_config(tmp_path_factory):
    path = tmp_path_factory.mktemp('cfg') / 'fcvit_tiny_cls_test.py'
    path.write_text(CLS_CONFIG)
    return str(path)


# ---------------------------------------------------------------------- #
# get_flops
# ---------------------------------------------------------------------- #
def block_hand_count(C, ratio, H, W):
    """Multiply-adds of one block (fvcore conventions: norms 5 per element,
    element-wise ops free), the global context by its definition."""
    N = H * W
    heads, c = 8, C // 8
    r = max(C // 8, 16)
    hidden = C * ratio
    norm = 5 * C * N
    gc = (C * N            # mean token
          + C * N          # similarity: per head <x_n, g> over c channels
          + 2 * heads * N  # std_mean over heads and positions
          + C * 2 * c      # fc1
          + 2 * c          # maxout over the two halves
          + c * C          # fc2
          + C * N)         # context: s[h, n] * v[h, c]
    dw = C * 11 * 11 * N
    pw_mlp = 2 * C * r * N
    token_mixer = 2 * (gc + dw + pw_mlp)
    channel_mixer = C * hidden * N + hidden * 9 * N + hidden * C * N
    return 2 * norm + token_mixer + channel_mixer, 2 * gc


@pytest.mark.parametrize('C,ratio,H,W', [(32, 4, 7, 9), (64, 8, 5, 5)])
def test_flops_of_one_block_match_hand_count(C, ratio, H, W):
    block = FCViTBlock(C, ratio)
    flops, params, skipped = get_flops.count_flops(
        block, torch.randn(1, C, H, W))
    expected, gc_part = block_hand_count(C, ratio, H, W)
    assert flops == expected
    assert params == sum(p.numel() for p in block.parameters())
    # the custom handles are what counts the global context
    from mmengine.analysis import FlopAnalyzer
    default = FlopAnalyzer(block, (torch.randn(1, C, H, W), ))
    default.unsupported_ops_warnings(False)
    default.tracer_warnings('none')
    assert expected - default.total() == 2 * (
        C * H * W + 2 * 8 * H * W + 2 * (C // 8) + C * H * W)
    assert 'aten::std_mean' not in skipped and 'aten::amax' not in skipped
    assert 'aten::gelu' in skipped  # element-wise stays uncounted


def test_outer_product_rule():
    h = get_flops.outer_product_mul

    class V:  # a jit value stand-in with a shape
        def __init__(self, shape):
            self.shape = shape

    import mmengine.analysis.jit_handles as jh
    orig = jh.get_shape
    jh.get_shape = lambda v: None if v is None else list(v.shape)
    try:
        assert h([V([2, 8, 1, 5]), V([2, 8, 4, 1])], [V([2, 8, 4, 5])]) == 320
        assert h([V([1, 4, 1, 1]), V([2, 4, 3, 3])], [V([2, 4, 3, 3])]) == 0
        assert h([V([2, 4]), None], [V([2, 4])]) == 0
    finally:
        jh.get_shape = orig


@pytest.mark.slow
def test_get_flops_fcvit_name_and_config(cls_config, capsys):
    res = get_flops.main(['fcvit-tiny', '--shape', '64'])
    assert res['params'] == 4_784_752  # the spec's classifier count
    assert res['shape'] == [64, 64]
    # the same network from a config: same backbone FLOPs plus a 5-way head
    res_cfg = get_flops.main([cls_config, '--shape', '64'])
    head_diff = 320 * 1000 - 320 * 5
    assert res['flops'] - res_cfg['flops'] == head_diff
    out = capsys.readouterr().out
    assert 'FLOPs (multiply-adds)' in out and 'backbone parameters' in out
    with pytest.raises(ValueError, match='unknown FCViT arch'):
        get_flops.main(['fcvit-b36'])
    with pytest.raises(SystemExit):
        get_flops.main(['fcvit-tiny', '--shape', '1', '2', '3'])


# ---------------------------------------------------------------------- #
# benchmark
# ---------------------------------------------------------------------- #
@pytest.mark.slow
def test_benchmark_models_table_and_memory(tmp_path, capsys):
    out = tmp_path / 'rows.json'
    rows = benchmark.main([
        '--models', 'fcvit-tiny', 'fcvit-tiny-plain', 'fcvit-tiny-cp',
        '--baseline', 'fcvit-tiny-plain', '--batch', '1', '--size', '64',
        '--reps', '2', '--warmup', '1', '--memory', '--memory-in', 'process',
        '--threads', '1', '--json', str(out)])
    assert len(rows) == 6
    by = {(r['model'], r['mode']): r for r in rows}
    for mode in ('inference', 'train'):
        assert by[('fcvit-tiny-plain', mode)]['ratio'] == pytest.approx(1.0)
        for name in ('fcvit-tiny', 'fcvit-tiny-cp'):
            r = by[(name, mode)]
            # the same model three ways; the rate is the median step's
            assert r['params_m'] == by[('fcvit-tiny-plain', mode)]['params_m']
            assert r['params_m'] > 4
            assert r['ms_min'] <= r['ms_per_step'] <= r['ms_max']
            assert r['images_per_s'] == pytest.approx(
                r['batch'] * 1e3 / r['ms_per_step'])
            if osp.exists('/proc/self/clear_refs'):
                assert r['peak_mem_mb'] is not None
    saved = json.loads(out.read_text())
    assert len(saved['rows']) == 6
    text = capsys.readouterr().out
    assert 'x fcvit-tiny-plain' in text and 'peak MiB' in text
    with pytest.raises(ValueError, match='unknown model'):
        benchmark.main(['--models', 'vgg16', '--reps', '1'])


@pytest.mark.slow
def test_benchmark_memory_in_fresh_process():
    if not osp.exists('/proc/self/clear_refs'):
        pytest.skip('needs Linux /proc')
    rows = benchmark.main([
        '--models', 'fcvit-tiny', '--batch', '1', '--size', '64',
        '--mode', 'train', '--reps', '1', '--warmup', '0', '--memory',
        '--threads', '1'])
    assert rows[0]['peak_mem_mb'] > 0


def test_benchmark_times_precisions_in_one_run(capsys):
    """``--amp none bf16``: every model in both precisions, interleaved in
    one run; ``amp_ratio`` is each row's speed against the same model in
    the first precision, and a bf16 training step runs bf16 products."""
    calls = []
    orig = measure.run_step

    def spy(target, mode, args, amp=None):
        calls.append(amp)
        return orig(target, mode, args, amp)

    with mock.patch.object(measure, 'run_step', spy):
        rows = benchmark.main([
            '--models', 'fcvit-tiny', '--mode', 'train', '--amp', 'none',
            'bf16', '--batch', '2', '--size', '32', '--reps', '2',
            '--warmup', '0', '--threads', '1'])
    assert [(r['model'], r['amp']) for r in rows] == [
        ('fcvit-tiny', 'none'), ('fcvit-tiny', 'bf16')]
    assert calls == ['none', 'bf16'] * 2  # interleaved
    none, bf16 = rows
    assert none['amp_ratio'] == pytest.approx(1.0)
    assert bf16['amp_ratio'] == pytest.approx(
        none['ms_per_step'] / bf16['ms_per_step'])
    text = capsys.readouterr().out
    assert 'amp none bf16' in text and 'x own none' in text
    with pytest.raises(SystemExit):
        kernel_floor.parse_args(['--amp', 'none', 'bf16'])
    args = benchmark.parse_args(['--amp', 'bf16', 'bf16'])
    assert args.amps == ['bf16'] and args.amp == 'bf16'


def test_benchmark_memory_process_gets_the_run_settings():
    """The fresh process that measures one target's memory is given its
    precision and the run's --cfg-options."""
    args = benchmark.parse_args([
        '--configs', 'a.py', '--amp', 'none', 'bf16', '--cfg-options',
        'model.x=2', 'model.y=[1,2]'])
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        return mock.Mock(stdout='{"peak": 7}\n', stderr='')

    with mock.patch.object(benchmark.subprocess, 'run', fake_run):
        assert benchmark._memory_in_subprocess('a.py', 'train', 'bf16',
                                               args) == 7
    cmd = seen[0]
    assert cmd[cmd.index('--amp') + 1] == 'bf16'
    opts = cmd[cmd.index('--cfg-options') + 1:]
    assert opts[:2] == ['model.x=2', 'model.y=[1, 2]']
    # and they parse back to the same settings
    child = benchmark.parse_args(['--configs', 'a.py', '--cfg-options',
                                  *opts[:2]])
    assert child.cfg_options == args.cfg_options


def test_fcvit_names_one_parser():
    assert parse_fcvit_name('fcvit-b12-plain-cl') == ('b12',
                                                      {'plain', 'cl'})
    assert parse_fcvit_name('fcvit-tiny') == ('tiny', set())
    with pytest.raises(ValueError, match=r'unknown suffix.*\[-plain\]'):
        parse_fcvit_name('fcvit-tiny-fused')
    with pytest.raises(ValueError, match='unknown FCViT arch'):
        parse_fcvit_name('fcvit-b36')
    with pytest.raises(ValueError, match=r'use fcvit-ARCH with'):
        parse_fcvit_name('fcvit-tiny-plain', flags=())


def test_benchmark_builds_variants():
    fast = build_backbone('fcvit-tiny')
    plain_cp = build_backbone('fcvit-tiny-plain-cp')
    assert fast.fast_path and not fast.with_cp
    assert not plain_cp.fast_path and plain_cp.with_cp
    assert not plain_cp.stages[2].blocks[0].token_mixer.gc1.fast_path
    with pytest.raises(ValueError,
                       match=r'fcvit-ARCH\[-plain\]\[-cp\]\[-cl\]'):
        build_backbone('fcvit-tiny-fused')


def test_benchmark_channels_last_variant():
    """``-cl``: the model as a user would convert it by hand (parameters and
    input channels-last), FCViT or not."""
    args = benchmark.parse_args(['--batch', '1', '--size', '64'])
    t = measure.ImageTarget('fcvit-tiny-plain-cl', args)
    assert t.channels_last and not t.model.backbone.fast_path
    assert t.x.is_contiguous(memory_format=torch.channels_last)
    stem = t.model.backbone.patch_embed.proj.weight
    assert stem.is_contiguous(memory_format=torch.channels_last)
    assert not stem.is_contiguous()
    plain = measure.ImageTarget('fcvit-tiny-plain', args)
    assert not plain.channels_last and plain.x.is_contiguous()
    # same function either way
    plain.model.load_state_dict(t.model.state_dict())
    plain.model.eval(), t.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(t.model(t.x), plain.model(t.x),
                                   rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- #
# kernel_floor
# ---------------------------------------------------------------------- #
def test_floor_records_the_fast_path_kernels():
    """The kernel floor sees every 1x1 product and depthwise convolution of
    a step, with its shape: FCViT-tiny has 13 blocks, each with 4 products
    in the token mixer and 2 in the channel mixer (one chunk at this size),
    and 3 depthwise convolutions."""
    args = kernel_floor.parse_args(['--batch', '1', '--size', '64'])
    t = measure.ImageTarget('fcvit-tiny', args)
    for mode in ('inference', 'train'):
        rec = kernel_floor.record_kernels(t, mode, args)
        gemms, dws = rec.gemms, rec.depthwise
        assert len(gemms) == 13 * 6 and len(dws) == 13 * 3
        # first block: 16 x 16 tokens, width 32, bottleneck max(32 // 8, 16)
        assert gemms[0] == (256, 32, 16) and gemms[1] == (256, 16, 32)
        assert dws[0][0] == (1, 32, 16, 16) and dws[0][1].kernel_size == (
            11, 11)
        # channel mixer: 32 -> 256 -> 32, its 3 x 3 depthwise with GELU
        assert (256, 32, 256) in gemms and (256, 256, 32) in gemms
        assert any(d[0] == (1, 256, 16, 16) and d[2] for d in dws)
    assert kernel_floor.record_kernels(
        measure.ImageTarget('fcvit-tiny-plain', args), 'train',
        args).calls == []
    assert all(p.grad is None for p in t.model.parameters())


def test_kernel_floor_table(capsys, tmp_path):
    out = tmp_path / 'floor.json'
    rows = kernel_floor.main([
        '--models', 'fcvit-tiny', 'fcvit-tiny-plain', '--batch', '1',
        '--size', '64', '--reps', '1', '--warmup', '0', '--threads', '1',
        '--baseline', 'resnet50', '--mode', 'inference', '--json',
        str(out)])
    assert [(r['model'], r['mode']) for r in rows] == [
        ('fcvit-tiny', 'inference')]
    fast = rows[0]
    assert fast['floor_ms'] == pytest.approx(
        fast['floor_gemm_ms'] + fast['floor_depthwise_ms'])
    assert fast['floor_gemm_ms'] > 0 and fast['floor_depthwise_ms'] > 0
    assert fast['ms_per_step'] > 0 and fast['baseline_ms'] > 0
    assert fast['floor_ratio'] == pytest.approx(
        fast['baseline_ms'] / fast['floor_ms'])
    assert json.loads(out.read_text())['rows'] == rows
    text = capsys.readouterr().out
    assert 'kernel floor' in text and 'best x resnet50' in text
    assert 'fcvit-tiny-plain: no fast-path kernels recorded' in text
    # the machine's own rates, in the step's precision
    assert fast['machine_gemm_gmacs'] > 0
    assert fast['machine_depthwise_gmacs'] > 0
    assert 'torch.float32: a 1024^3 GEMM runs at' in text
    assert 'CPU flags:' in text  # what the CPU has for bf16


def test_kernel_floor_times_bf16_gemms_under_amp():
    """Under --amp bf16 the floor's GEMMs run in bf16, as autocast runs the
    step's products."""
    args = kernel_floor.parse_args(['--amp', 'bf16'])
    assert kernel_floor.gemm_dtype(args) == torch.bfloat16
    assert kernel_floor.gemm_dtype(kernel_floor.parse_args([])) == \
        torch.float32
    products = kernel_floor._gemm_job(4, 3, 2, True, 'cpu', torch.bfloat16)
    products()  # bf16 in, bf16 out: no dtype error


def test_benchmark_peak_memory_sees_allocations():
    if not osp.exists('/proc/self/clear_refs'):
        pytest.skip('needs Linux /proc')
    big = measure.peak_memory(
        lambda: torch.ones(64 << 20, dtype=torch.uint8).add_(1), 'cpu')
    assert big >= 48 << 20


def test_benchmark_config_iteration(cls_config):
    rows = benchmark.main(['--configs', cls_config, '--batch', '2',
                           '--size', '64', '--reps', '1', '--warmup', '0',
                           '--threads', '1'])
    assert {r['mode'] for r in rows} == {'inference', 'train'}
    assert all(r['images_per_s'] > 0 for r in rows)
    # --cfg-options reach the built model (a head of 7 classes, not 5)
    more = benchmark.main(['--configs', cls_config, '--batch', '2',
                           '--size', '64', '--reps', '1', '--warmup', '0',
                           '--threads', '1', '--mode', 'inference',
                           '--cfg-options', 'model.head.num_classes=7'])
    assert (more[0]['params_m'] - rows[0]['params_m']) * 1e6 == \
        pytest.approx(2 * (320 + 1))
    with pytest.raises(FileNotFoundError, match='not found'):
        benchmark.main(['--configs', 'no/such/config.py', '--reps', '1'])


# ---------------------------------------------------------------------- #
# plot_curves
# ---------------------------------------------------------------------- #
def _write_scalars(path, records):
    path.parent.mkdir(parents=True)
    path.write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def test_plot_curves_latest_training_run(tmp_path, capsys):
    import cv2
    work = tmp_path / 'work'
    train = [dict(lr=1e-3, loss=2.0 - 0.1 * i, loss_cls=1.0 - 0.05 * i,
                  loss_bbox=1.0 - 0.05 * i, time=0.5, iter=10 * i,
                  step=10 * i) for i in range(1, 6)]
    val = [dict(**{'coco/bbox_mAP': 0.1 * k, 'coco/segm_mAP': 0.05 * k},
                data_time=0.1, time=0.2, step=20 * k) for k in (1, 2)]
    # an older training run, and a later run that only tested
    _write_scalars(work / '20240101_000000' / 'vis_data' / 'scalars.json',
                   train[:2])
    _write_scalars(work / '20240102_000000' / 'vis_data' / 'scalars.json',
                   train[:2] + val[:1] + train[2:] + val[1:])
    _write_scalars(work / '20240103_000000' / 'vis_data' / 'scalars.json',
                   [dict(time=0.1, step=1)])
    res = plot_curves.main([str(work)])
    assert res['scalars'].endswith(
        osp.join('20240102_000000', 'vis_data', 'scalars.json'))
    assert res['out'] == str(work / 'curves.png')
    assert res['losses'] == ['loss', 'loss_bbox', 'loss_cls']
    assert res['metrics'] == ['coco/bbox_mAP', 'coco/segm_mAP']
    assert (res['num_train'], res['num_val']) == (5, 2)
    img = cv2.imread(res['out'])
    assert img is not None and img.shape[1] > 400 and img.std() > 0
    assert 'wrote' in capsys.readouterr().out
    # one metric, another file
    res = plot_curves.main([str(work), '--metrics', 'coco/segm_mAP',
                            '--out', str(tmp_path / 'c.png')])
    assert res['metrics'] == ['coco/segm_mAP']
    assert (tmp_path / 'c.png').is_file()
    with pytest.raises(KeyError, match='not in'):
        plot_curves.main([str(work), '--metrics', 'mIoU'])
    with pytest.raises(FileNotFoundError, match='no training log'):
        plot_curves.main([str(work / '20240103_000000')])
    with pytest.raises(FileNotFoundError, match='work dir not found'):
        plot_curves.main([str(tmp_path / 'nowhere')])


# ---------------------------------------------------------------------- #
# visualize_similarity
# ---------------------------------------------------------------------- #
def _image(tmp_path):
    import cv2
    rng = np.random.default_rng(0)
    img = np.full((80, 96, 3), 40, np.uint8)
    img[20:60, 30:70] = (30, 200, 240)  # a bright square
    img = np.clip(img + rng.integers(0, 20, img.shape), 0, 255)
    path = tmp_path / 'img.png'
    cv2.imwrite(str(path), img.astype(np.uint8))
    return str(path)


def test_visualize_similarity_from_config(tmp_path, cls_config):
    import cv2
    model, backbone = visualize.build(cls_config)
    torch.manual_seed(0)
    backbone.init_weights()
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    out = tmp_path / 'vis' / 'sim.png'
    maps = visualize.main([cls_config, str(ckpt), _image(tmp_path),
                           '--out', str(out), '--size', '64', '96'])
    # the last block (stage 3, stride 32): 8 heads of 2 x 3
    assert tuple(maps.shape) == (8, 2, 3)
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape[0] > 3 * 64
    # the maps are GlobalContext.similarity of the block's input, with the
    # checkpoint's weights
    model2, bb2 = visualize.build(cls_config)
    visualize.load_weights(model2, bb2, str(ckpt))
    blk = bb2.stages[3].blocks[-1]
    seen = {}
    blk.token_mixer.gc1.register_forward_pre_hook(
        lambda m, a: seen.setdefault('x', a[0]))
    bb2.eval()
    img = visualize.read_image(_image(tmp_path), (64, 96))
    with torch.no_grad():
        bb2.fast_path = False
        bb2(visualize.to_input(model2, img))
        ref = blk.token_mixer.gc1.similarity(seen['x'])[0]
    torch.testing.assert_close(maps, ref)


def test_visualize_similarity_backbone_checkpoint_and_errors(tmp_path):
    model = FCViT(arch='tiny')
    model.init_weights()
    ckpt = tmp_path / 'backbone.pth'
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / 'sim2.png'
    maps = visualize.main(['fcvit-tiny', str(ckpt), _image(tmp_path),
                           '--out', str(out), '--block', '1.0', '--gc', '2',
                           '--size', '64', '64'])
    assert tuple(maps.shape) == (8, 8, 8) and out.exists()
    # the saved weights were used (not a fresh random init)
    img = visualize.read_image(_image(tmp_path), (64, 64))
    ref = visualize.similarity_maps(model, model.stages[1].blocks[0],
                                    visualize.to_input(model, img), 2)
    torch.testing.assert_close(maps, ref)
    with pytest.raises(ValueError, match='does not name a block'):
        visualize.main(['fcvit-tiny', str(ckpt), _image(tmp_path),
                        '--out', str(out), '--block', '7.0'])
    with pytest.raises(FileNotFoundError, match='cannot read image'):
        visualize.main(['fcvit-tiny', str(ckpt), str(tmp_path / 'no.png'),
                        '--out', str(out)])
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        visualize.main(['fcvit-tiny', str(tmp_path / 'none.pth'),
                        _image(tmp_path), '--out', str(out)])
