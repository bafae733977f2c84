"""The GPU check (tools/analysis/gpu_check.py) and what it needs: the
torchvision-backed stand-in for mmcv's compiled ops, compared with mmcv's
own on the CPU, and a dry run of the whole check on the CPU (every
section, a failing cell, the stand-in under a Mask R-CNN iteration)."""
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import ROOT
from tools.analysis.lib import gpu_check
from tools.analysis.lib import ops_standin as standin
from tools.analysis.lib.models import build_backbone, parse_fcvit_name
from helpers import one_thread  # noqa: F401

mmcv_ops = pytest.importorskip('mmcv.ops')
if standin.is_installed():  # pragma: no cover
    pytest.skip('mmcv.ops is the stand-in here: nothing to compare with',
                allow_module_level=True)


def _boxes(n, generator, size=100.):
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 3 + 1
    return torch.cat([xy, xy + wh], 1)


# ---------------------------------------------------------------------- #
# the stand-in against mmcv's compiled ops
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
def test_roi_align_same_as_mmcv(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 4, 23, 31, generator=g, dtype=torch.float64)
    boxes = _boxes(9, g, 110.).double()
    rois = torch.cat([torch.randint(0, 2, (9, 1), generator=g).double(),
                      boxes], 1)
    grads = []
    outs = []
    for impl in (mmcv_ops.RoIAlign, standin.RoIAlign):
        x = feats.clone().requires_grad_()
        layer = impl((7, 5), spatial_scale=0.25,
                     sampling_ratio=sampling_ratio, aligned=aligned)
        out = layer(x, rois)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(
            out.shape).sin())
        outs.append(out.detach())
        grads.append(x.grad)
    assert outs[0].shape == (9, 4, 7, 5)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    # the function form, positional arguments as mmdet's mask targets use
    torch.testing.assert_close(
        standin.roi_align(feats, rois, 3, 1.0, 0, 'avg', True),
        mmcv_ops.roi_align(feats, rois, 3, 1.0, 0, 'avg', True))


def test_roi_align_float_boxes_on_half_features_and_bad_input():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 3, 16, 16, generator=g)
    rois = torch.cat([torch.zeros(4, 1), _boxes(4, g, 60.)], 1)
    out = standin.roi_align(feats.to(torch.bfloat16), rois, 4, 0.25)
    assert out.dtype == torch.bfloat16  # the boxes were not rounded
    torch.testing.assert_close(
        out.float(), mmcv_ops.roi_align(feats.to(torch.bfloat16).float(),
                                        rois, 4, 0.25), rtol=0, atol=1e-2)
    with pytest.raises(NotImplementedError, match="pool_mode='max'"):
        standin.RoIAlign(7, pool_mode='max')
    with pytest.raises(ValueError, match=r'rois must be \(K, 5\)'):
        standin.roi_align(feats, rois[:, 1:], 4)


def test_nms_same_keep_set_as_mmcv():
    g = torch.Generator().manual_seed(2)
    boxes = _boxes(300, g)
    scores = torch.randperm(300, generator=g).float() / 300  # no ties
    for thr in (0.3, 0.5, 0.7):
        dets, keep = standin.nms(boxes, scores, thr)
        ref_dets, ref_keep = mmcv_ops.nms(boxes, scores, thr)
        assert 0 < len(keep) < 300
        assert keep.tolist() == ref_keep.tolist()
        torch.testing.assert_close(dets, ref_dets)
    # numpy in, numpy out; the extra mmcv arguments
    dets, keep = standin.nms(boxes.numpy(), scores.numpy(), 0.5)
    assert isinstance(keep, np.ndarray)
    assert keep.tolist() == mmcv_ops.nms(boxes, scores, 0.5)[1].tolist()
    _, keep = standin.nms(boxes, scores, 0.5, score_threshold=0.5,
                          max_num=5)
    assert len(keep) == 5 and (scores[keep] > 0.5).all()
    with pytest.raises(NotImplementedError, match='offset=1'):
        standin.nms(boxes, scores, 0.5, offset=1)


@pytest.mark.parametrize('cfg', [
    dict(type='nms', iou_threshold=0.5),
    dict(type='nms', iou_threshold=0.6, class_agnostic=True),
    dict(iou_threshold=0.5, split_thr=50),  # per class, one at a time
])
def test_batched_nms_same_as_mmcv(cfg):
    g = torch.Generator().manual_seed(3)
    boxes = _boxes(200, g)
    scores = torch.randperm(200, generator=g).float() / 200
    idxs = torch.randint(0, 5, (200, ), generator=g)
    dets, keep = standin.batched_nms(boxes, scores, idxs, cfg)
    ref_dets, ref_keep = mmcv_ops.batched_nms(boxes, scores, idxs, cfg)
    assert keep.tolist() == ref_keep.tolist()
    torch.testing.assert_close(dets, ref_dets)
    dets, keep = standin.batched_nms(boxes, scores, idxs, None)
    assert len(keep) == 200 and (dets[1:, 4] <= dets[:-1, 4]).all()
    with pytest.raises(NotImplementedError, match="'soft_nms'"):
        standin.batched_nms(boxes, scores, idxs, dict(type='soft_nms'))


def test_sigmoid_focal_loss_matches_mmdet_reference():
    """mmcv's focal loss has no CPU kernel: compared with mmdet's own
    PyTorch formula (one-hot targets), and the per-class weight with the
    CUDA kernel's rule (weight of the sample's target class)."""
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(12, 5, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, 6, (12, ), generator=g)  # 5 = background
    onehot = torch.nn.functional.one_hot(target, 6)[:, :5].double()
    for reduction in ('none', 'mean', 'sum'):
        x1, x2 = logits.clone().requires_grad_(), logits.clone(
        ).requires_grad_()
        ours = standin.sigmoid_focal_loss(x1, target, 2.0, 0.25, None,
                                          reduction)
        ref = py_sigmoid_focal_loss(x2, onehot, gamma=2.0, alpha=0.25,
                                    reduction='none')
        ref = dict(none=ref, mean=ref.sum() / 12, sum=ref.sum())[reduction]
        torch.testing.assert_close(ours, ref)
        ours.sum().backward()
        ref.sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad)
    w = torch.rand(5, generator=g, dtype=torch.float64)
    weighted = standin.sigmoid_focal_loss(logits, target, 2.0, 0.25, w,
                                          'none')
    plain = standin.sigmoid_focal_loss(logits, target, 2.0, 0.25, None,
                                       'none')
    per_sample = torch.where(target < 5, w[target.clamp(max=4)],
                             torch.zeros((), dtype=w.dtype))
    torch.testing.assert_close(weighted, plain * per_sample[:, None])
    with pytest.raises(ValueError, match='class indices'):
        standin.sigmoid_focal_loss(logits, onehot, 2.0, 0.25)


def test_standin_registers_where_mmdet_looks_and_restores():
    """Forced in (mmcv's compiled ops are here): ``mmcv.ops``, ``from
    mmcv import ops``, ``mmcv.ops.roi_align`` / ``.nms`` give the stand-in;
    other ops import but refuse to run, naming themselves; mmcv's pure
    PyTorch ops come from mmcv's files; afterwards mmcv's own are back."""
    import mmcv
    real = sys.modules['mmcv.ops']
    assert not standin.is_installed() and standin.compiled_ops_available()
    assert standin.install_ops_standin() is False  # not needed here
    try:
        assert standin.install_ops_standin(force=True)
        from mmcv import ops
        from mmcv.ops import DeformConv2d, point_sample
        from mmcv.ops.nms import batched_nms
        from mmcv.ops.roi_align import roi_align
        assert ops is mmcv.ops is sys.modules['mmcv.ops'] is not real
        assert getattr(ops, 'RoIAlign') is standin.RoIAlign
        assert batched_nms is standin.batched_nms
        assert roi_align is standin.roi_align
        assert ops.sigmoid_focal_loss is standin.sigmoid_focal_loss
        assert point_sample.__module__ == 'mmcv.ops.point_sample'
        with pytest.raises(NotImplementedError,
                           match="mmcv.ops.DeformConv2d needs mmcv's"):
            DeformConv2d(3, 3, 3)
        with pytest.raises(NotImplementedError, match='nms_match'):
            ops.nms_match(torch.zeros(1, 5), 0.5)
        assert not standin.compiled_ops_available()
    finally:
        standin.uninstall_ops_standin()
    assert sys.modules['mmcv.ops'] is real and mmcv.ops is real
    assert not standin.is_installed()


# ---------------------------------------------------------------------- #
# model names used by the check
# ---------------------------------------------------------------------- #
def test_check_model_names():
    tv = build_backbone('resnet50-tv')
    assert type(tv).__module__.startswith('torchvision')
    assert tv(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    fast = build_backbone('fcvit-tiny-fast')
    assert fast.fast_path is True and fast.kernels == 'cpu'
    assert build_backbone('fcvit-tiny-plain').kernels == 'plain'
    # the kernels the check reports follow the model onto its device
    assert fast.to('meta').kernels == 'standard'
    with pytest.raises(ValueError, match='exclude each other'):
        parse_fcvit_name('fcvit-tiny-plain-fast')


# ---------------------------------------------------------------------- #
# the check itself
# ---------------------------------------------------------------------- #
def test_section_stopped_at_budget_keeps_its_cells(tmp_path):
    """A section that overruns is killed (its process group) at its
    budget; the cells it wrote stay, the rest are reported as not run
    with the reason."""
    fake = tmp_path / 'fake_section.py'
    fake.write_text(textwrap.dedent('''
        import json, sys, time
        results = sys.argv[sys.argv.index('--results') + 1]
        with open(results, 'a') as f:
            f.write(json.dumps(dict(key='eager/a', status='ok', ms=1.0,
                                    model='a', amp='bf16', mode='train',
                                    compiled=False)) + '\\n')
        time.sleep(60)
    '''))
    args = gpu_check.parse_args(['--dry-run', '--sections', 'eager',
                                 '--eager-models', 'a', 'b',
                                 '--work-dir', str(tmp_path)])
    args.script, args.child_argv = str(fake), []
    results = str(tmp_path / 'cells.jsonl')
    with open(tmp_path / 'log', 'w') as log:
        status = gpu_check._run_section('eager', 2, args, results,
                                        dict(os.environ), log)
    assert status['reason'] == 'section stopped at its time budget (2 s)'
    assert status['seconds'] < 30
    assert list(gpu_check._read_results(results)) == ['eager/a']
    with pytest.raises(SystemExit):
        gpu_check.parse_args(['--budget', '3'])
    with open(tmp_path / 'log', 'w') as log:
        err = gpu_check._install_wheels(str(tmp_path), str(tmp_path / 's'),
                                        log)
    assert err.startswith('no wheels in')


def test_env_and_tests_sections(tmp_path, monkeypatch):
    """The env section names the ops in use; the tests section runs
    pytest on the backbone's test files, the tests named ``cuda`` only,
    and reports pytest's summary (a failure as a failed cell)."""
    (tmp_path / 'test_fake_backbone.py').write_text(textwrap.dedent('''
        import pytest, torch
        @pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA')
        def test_cuda_thing():
            assert torch.ones(1, device='cuda').item() == 1
        def test_cuda_fails_on_purpose():
            assert False
        def test_cpu_thing():
            assert False  # deselected: not a CUDA test
    '''))
    monkeypatch.setattr(gpu_check, 'TEST_FILES', (
        str(tmp_path / 'test_fake_backbone.py'), 'tests/no_such_file.py'))
    monkeypatch.setattr(gpu_check, 'TEST_GLOBS', ())
    args = gpu_check.parse_args(['--dry-run', '--work-dir', str(tmp_path)])
    args.deadline = gpu_check.time.time() + 120
    results = str(tmp_path / 'cells.jsonl')
    for section in ('env', 'tests'):
        gpu_check.SECTION_FUNCS[section](
            [dict(key=section)], args, gpu_check._Writer(results, section))
    cells = gpu_check._read_results(results)
    assert 'ops: torchvision stand-in (forced)' in cells['env']['summary']
    import mmdet
    assert f'mmdet {mmdet.__version__}' in cells['env']['summary']
    tests = cells['tests']
    assert tests['status'] == 'failed' and tests['rc'] == 1
    assert '1 failed' in tests['summary'] and '1 deselected' in \
        tests['summary']
    assert ('1 skipped' if not torch.cuda.is_available() else '1 passed') \
        in tests['summary']
    assert 'no_such_file' not in tests['summary']


@pytest.mark.slow
def test_dry_run_measuring_sections(tmp_path):
    """The measuring sections on the CPU, each in its process: eager
    cells, one Mask R-CNN iteration through the forced stand-in, compiled
    cells; a model that cannot be built fails its cells alone; JSON and
    log written; the table comes last."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    res = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'gpu_check.py'),
         '--dry-run', '--threads', '1', '--out', str(tmp_path / 'out'),
         '--sections', 'eager', 'dense', 'compile',
         '--eager-models', 'resnet50-tv', 'fcvit-tiny', 'fcvit-nope',
         '--compile-models', 'resnet50-tv-cl',
         '--dense-only', 'demo_maskrcnn'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:]
    with open(tmp_path / 'out' / 'gpu_check.json') as f:
        result = json.load(f)
    cells = {c['key']: c for c in result['cells']}
    assert set(result['sections']) == {'eager', 'dense', 'compile'}
    for key, c in cells.items():
        if 'fcvit-nope' in key:
            assert c['status'] == 'failed'
            assert 'unknown FCViT arch' in c['reason']
        else:
            assert c['status'] == 'ok', c
    assert len([k for k in cells if k.startswith('eager/')]) == 12
    assert cells['eager/fcvit-tiny/bf16/train']['peak_mib'] > 0
    # the kernels the backbone runs on the check's device (the CPU here)
    assert cells['eager/fcvit-tiny/bf16/train']['kernels'] == 'cpu'
    dense, = [c for c in cells.values() if c['section'] == 'dense']
    assert dense['ops'] == 'stand-in'
    assert dense['roi_layers'] == [
        'tools.analysis.lib.ops_standin.RoIAlign']
    assert dense['ms'] > 0 and dense['peak_mib'] > 0
    assert cells['compile/resnet50-tv-cl/bf16/train']['ms'] > 0
    out = res.stdout.rstrip().splitlines()
    last_progress = max(i for i, ln in enumerate(out)
                        if ln.startswith('[gpu_check]'))
    table = '\n'.join(out[last_progress + 1:])
    assert table.startswith('total ')
    assert 'fcvit-tiny' in table and 'demo_maskrcnn' in table
    assert 'eager/fcvit-nope/bf16/train: failed: ValueError' in table
    with open(tmp_path / 'out' / 'gpu_check.log') as f:
        assert table in f.read()
