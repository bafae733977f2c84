"""tools/deployment/benchmark_onnx.py runs its whole code path (exports,
PyTorch eager and compiled, ONNX Runtime and OpenVINO in float32 and bf16,
the classifier, detection and segmentation end to end, both profilers) on
tiny models and sizes with one repetition, so that it cannot rot. No
timings are checked: the figures come from the full-size run
(docs/deployment.md)."""
import glob
import importlib.util
import os
import os.path as osp

import pytest
from helpers import load_tool, one_thread  # noqa: F401

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')
if importlib.util.find_spec('openvino') is None:
    pytest.skip('needs the openvino extra: pip install -e .[openvino]',
                allow_module_level=True)

CLS_TINY = 'configs/classification/demo_fcvit_tiny_shapes.py'
DET_TINY = 'configs/detection/demo_maskrcnn_fcvit_tiny_shapes.py'
SEG_TINY = 'configs/segmentation/demo_fpn_fcvit_tiny_shapes.py'


def test_benchmark_code_path(monkeypatch, tmp_path, capsys):
    from fcvit_mm.deploy.backends import openvino_cpu_has_bf16
    tool = load_tool('deployment/benchmark_onnx')
    # the tiny models stand in for FCViT-B12 and the ResNet-50 baselines
    monkeypatch.setattr(tool, 'CLS', {'fcvit': (CLS_TINY, {}),
                                      'fcvit-plain': (CLS_TINY, tool.PLAIN),
                                      'baseline': (CLS_TINY, {})})
    monkeypatch.setattr(tool, 'DET', {'maskrcnn': (DET_TINY, {})})
    monkeypatch.setattr(tool, 'SEG', {'fpn': (SEG_TINY, {})})
    monkeypatch.chdir(tmp_path)  # nothing may be left behind here
    temp = tmp_path / 'temp'
    temp.mkdir()
    monkeypatch.setenv('TMPDIR', str(temp))
    monkeypatch.setattr('tempfile.tempdir', None)
    results = tool.main([
        '--batch', '2', '--size', '64', '--det-size', '64', '90',
        '--det-sampling-ratio', '2',
        '--seg-size', '64', '64', '--repeats', '1', '--threads', '1',
        '--compile-backend', 'eager', '--profile'])
    out = capsys.readouterr().out
    assert 'CPU flags: ' in out and 'amx_bf16' in out and 'avx512_bf16' in out
    deployed = ['onnxruntime fp32', 'openvino fp32']
    if openvino_cpu_has_bf16():  # a column of its own
        deployed.append('openvino bf16')
        assert 'openvino bf16 / openvino fp32: fcvit ' in out
    else:
        assert 'openvino bf16 left out: ' in out
    cls = results['cls']
    table = cls[2]  # each batch size of --batch runs the same code
    assert set(table) == {'eager', 'compile', *deployed}
    for rt in deployed:
        assert set(table[rt]) == {'fcvit', 'fcvit-plain', 'baseline'}
        assert table[rt]['baseline'][1] == pytest.approx(1.0)
    for rt in ('eager', 'compile'):  # the model as the config builds it
        assert set(table[rt]) == {'fcvit', 'baseline'}
    for rt, rows in table.items():
        for speed, ratio in rows.values():
            assert speed > 0 and ratio > 0
    for rt in deployed:
        shares = cls['profile fcvit'][rt]
        assert sum(shares.values()) == pytest.approx(1.0)
        assert any(k.startswith(('Conv', 'Convolution')) for k in shares)
        assert f'{rt} profile of fcvit' in out
    for task in ('det', 'seg'):
        assert set(results[task]) == set(deployed)
        # the exported graphs' share of the same calls, per model
        graphs = results[f'{task} graphs']
        assert set(graphs) == set(deployed)
        for rt in deployed:
            name = next(iter(graphs[rt]))
            # graphs alone run faster than end to end, and take time
            assert 0 < results[task][rt][name][0] < graphs[rt][name][0]
    assert 'detection, 1 image 64 x 90 end to end' in out
    assert 'detection: the same calls, time in the exported graphs' in out
    assert 'outside the graphs (pipeline, library ops)' in out
    # the exports and ONNX Runtime's trace went to temporary folders, gone
    # (torch.compile's own cache, torchinductor_<user>, may stay)
    assert os.listdir(tmp_path) == ['temp']
    left = [p for p in glob.glob(osp.join(str(temp), '*'))
            if not osp.basename(p).startswith('torchinductor_')]
    assert left == []


def test_bf16_column_left_out_on_a_cpu_without_bf16(monkeypatch, capsys):
    """Where OpenVINO cannot run bf16 (simulated), the benchmark leaves its
    bf16 column out and says why; float32 columns stay."""
    from fcvit_mm.deploy import backends
    tool = load_tool('deployment/benchmark_onnx')
    args = tool.parse_args(['--precision', 'fp32', 'bf16'])
    assert 'openvino bf16' in tool.deployed_columns(args) or \
        not backends.openvino_cpu_has_bf16()
    monkeypatch.setattr(backends, 'openvino_cpu_has_bf16', lambda: False)
    capsys.readouterr()
    assert tool.deployed_columns(args) == {
        'onnxruntime fp32': ('onnxruntime', 'fp32'),
        'openvino fp32': ('openvino', 'fp32')}
    assert 'openvino bf16 left out: ' in capsys.readouterr().out


def test_det_sampling_ratio_reaches_both_roi_extractors():
    """``--det-sampling-ratio`` sets the RoIAlign of the box and the mask
    extractors of the detector config (mmdet's 0 without it)."""
    from mmengine.config import Config
    tool = load_tool('deployment/benchmark_onnx')
    for argv, want in (([], 0), (['--det-sampling-ratio', '2'], 2)):
        options = tool.det_cfg_options(tool.parse_args(argv))
        assert options['model.test_cfg.rcnn.score_thr'] == 0.0
        cfg = Config.fromfile(DET_TINY)
        cfg.merge_from_dict(options)
        for extractor in ('bbox_roi_extractor', 'mask_roi_extractor'):
            layer = cfg.model.roi_head[extractor].roi_layer
            assert layer.type == 'RoIAlign' and layer.sampling_ratio == want
