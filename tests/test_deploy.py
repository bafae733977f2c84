"""Deployment: config + checkpoint -> ONNX -> ONNX Runtime and OpenVINO,
against the library's own inference (tools/deployment/export_onnx.py,
fcvit_mm.deploy).

Per task, a tiny model of each config family (FCViT-tiny, slim heads, 3-4
classes) is saved as a checkpoint, exported at one size, and run on an
image that the test pipeline brings to another size; the library's own
inference function (mmdet ``inference_detector``, mmseg
``inference_model``, mmpretrain ``ImageClassificationInferencer``) runs the
PyTorch model loaded from the checkpoint and the exported model in each
runtime, and the results must agree as docs/deployment.md promises. The
exports and the PyTorch references are made once per module, and both
runtimes run the same export; OpenVINO in bf16 runs it too, against the
bf16 criteria. Needs the ``deploy`` extra (onnx, onnxruntime, onnxscript)
and, for the OpenVINO cases, the ``openvino`` extra (skipped without it).
"""
import importlib.util
import os.path as osp
import sys
import warnings

import numpy as np
import pytest
import torch

from fcvit_mm.models import FCViT
from helpers import load_tool, one_thread  # noqa: F401

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from fcvit_mm.deploy import (CheckpointMismatchError, export_model,  # noqa
                             init_onnx_model)
from fcvit_mm.deploy import backends  # noqa: E402
from fcvit_mm.deploy.export import OPSETS, check_opset  # noqa: E402
from fcvit_mm.deploy.parity import (COMPARE, compare,  # noqa: E402
                                    library_inference)
from fcvit_mm.deploy.runtime import init_library_model  # noqa: E402
from fcvit_mm.utils.config import build_model, load_task_config  # noqa

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(ROOT, 'configs')
DET_PIPELINE = [dict(type='LoadImageFromFile'),
                dict(type='Resize', scale=(128, 128), keep_ratio=True),
                dict(type='PackDetInputs')]
SEG_PIPELINE = [dict(type='LoadImageFromFile'),
                dict(type='Resize', scale=(128, 128), keep_ratio=True),
                dict(type='ResizeToMultiple', size_divisor=32),
                dict(type='PackSegInputs')]
TINY = [32, 64, 160, 320]  # FCViT-tiny's widths
HAVE_OPENVINO = importlib.util.find_spec('openvino') is not None
needs_openvino = pytest.mark.skipif(
    not HAVE_OPENVINO, reason='needs the openvino extra: '
    'pip install -e .[openvino]')
#: both runtimes; OpenVINO's cases skip (saying how to install it) without it
RUNTIMES = ['onnxruntime', pytest.param('openvino', marks=needs_openvino)]

#: name -> (config, cfg_options, export (H, W)); each test pipeline brings
#: the test image (100 x 150) to another size than the export's
MODELS = {
    'classifier': ('classification/demo_fcvit_tiny_shapes.py', {},
                   (96, 96)),
    'fpn': ('segmentation/demo_fpn_fcvit_tiny_shapes.py', {}, (64, 96)),
    'upernet': ('segmentation/upernet_fcvit_b12_ade20k.py', {
        'model.backbone.arch': 'tiny',
        'model.data_preprocessor.size': (128, 128),
        'model.decode_head.in_channels': TINY,
        'model.decode_head.channels': 32,
        'model.decode_head.num_classes': 4,
        'model.auxiliary_head.in_channels': TINY[2],
        'model.auxiliary_head.channels': 16,
        'model.auxiliary_head.num_classes': 4,
        'test_pipeline': SEG_PIPELINE}, (64, 64)),
    'retinanet': ('detection/retinanet_fcvit_b12.py', {
        'model.backbone.arch': 'tiny',
        'model.neck.in_channels': TINY[1:],
        'model.neck.out_channels': 32,
        'model.bbox_head.in_channels': 32,
        'model.bbox_head.feat_channels': 32,
        'model.bbox_head.num_classes': 3,
        'test_dataloader.dataset.pipeline': DET_PIPELINE}, (64, 64)),
    # its RPN keeps every anchor (no top-k cut before its NMS): a random
    # RPN's objectness has many near-ties at the cut, and a random RCNN
    # scores any proposal high, so in bf16 the cut would decide which
    # detections there are (a trained detector scores such proposals low)
    'maskrcnn': ('detection/demo_maskrcnn_fcvit_tiny_shapes.py', {
        'model.test_cfg.rpn.nms_pre': 10000,
        'model.test_cfg.rpn.max_per_img': 3000}, (64, 64)),
}
TASKS = {'classifier': 'classification', 'fpn': 'segmentation',
         'upernet': 'segmentation', 'retinanet': 'detection',
         'maskrcnn': 'detection'}
CLASSES = {'classification': ('circle', 'square', 'triangle'),
           'segmentation': ('background', 'circle', 'square', 'triangle'),
           'detection': ('circle', 'square', 'triangle')}


def _spread_scores(model: torch.nn.Module) -> None:
    """Random heads score everything alike (their classifier layers start
    at std 0.01), which would make NMS choose among near-ties and put mask
    pixels at the 0.5 threshold: give the classifier layers weights that
    spread scores and mask logits out."""
    torch.manual_seed(1)
    for name, m in model.named_modules():
        if name.split('.')[-1] in ('rpn_cls', 'retina_cls', 'fc_cls',
                                   'conv_logits', 'conv_seg', 'fc'):
            torch.nn.init.normal_(m.weight, std=m.weight[0].numel() ** -0.5
                                  * 3)
            torch.nn.init.normal_(m.bias, std=1.0)


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    """A 100 x 150 picture of a few coloured boxes on noise (BGR file)."""
    import mmcv
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (100, 150, 3)).astype(np.uint8)
    for y, x, h, w, c in ((10, 10, 40, 50, 200), (50, 80, 40, 60, 120),
                          (20, 100, 30, 30, 255)):
        img[y:y + h, x:x + w] = (c, 255 - c, 90)
    path = str(tmp_path_factory.mktemp('img') / 'test.png')
    mmcv.imwrite(img, path)
    return path


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """name -> (config file, checkpoint, export dir, manifest), built on
    first use."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _make(name, tmp_path_factory.mktemp(name))
        return cache[name]
    return get


def _make(name, tmp):
    rel, options, shape = MODELS[name]
    cfg, _ = load_task_config(osp.join(CFG, rel), dict(options))
    config = str(tmp / 'config.py')
    cfg.dump(config)
    torch.manual_seed(0)
    model = build_model(cfg)
    if hasattr(model, 'init_weights'):
        model.init_weights()
    _spread_scores(model)
    task = TASKS[name]
    ckpt = str(tmp / 'model.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': CLASSES[task]}}}, ckpt)
    out = str(tmp / 'onnx')
    manifest = export_model(config, ckpt, out, shape=shape)
    return config, ckpt, out, manifest


@pytest.fixture(scope='module')
def reference(exported, image):
    """name -> (PyTorch model loaded from the checkpoint, the library's
    inference of it on the test image), made once for both runtimes."""
    cache = {}

    def get(name):
        if name not in cache:
            config, ckpt, _, _ = exported(name)
            model = init_library_model(config, ckpt)
            cache[name] = model, library_inference(model, TASKS[name], image)
        return cache[name]
    return get


@pytest.mark.slow
@pytest.mark.parametrize('runtime', RUNTIMES)
@pytest.mark.parametrize('name', list(MODELS))
def test_parity_with_library_inference(name, runtime, exported, reference,
                                       image):
    """The library's inference gives the same result with the export in
    the runtime as with the PyTorch model, on an image the pipeline brings
    to another size than the export's."""
    _, _, out, manifest = exported(name)
    task = TASKS[name]
    assert manifest['task'] == task
    _, ref = reference(name)
    deployed = init_onnx_model(out, threads=1, runtime=runtime)
    assert deployed.onnx_runtime == runtime
    assert {p.session.runtime for p in deployed.onnx_parts.values()} == {
        runtime}
    got = library_inference(deployed, task, image)
    if task == 'detection':
        thr = 0.05
        res = COMPARE[task](ref, got, score_thr=thr)
        assert res['ref_count'] >= 3, res  # something to compare
        fed = ref.metainfo['batch_input_shape']
    else:
        res = COMPARE[task](ref, got)
        fed = ref.metainfo.get('img_shape') if task == 'segmentation' \
            else None
    assert res['ok'], res
    if fed is not None:
        assert tuple(fed) != tuple(manifest['export_shape'][2:])
    if task == 'classification':  # the classes come from the checkpoint
        assert got['pred_class'] == ref['pred_class']


def test_default_export_is_the_inference_form(exported):
    """export_model's default puts FCViT in its inference form
    (switch_to_deploy, ONNX forms): the graph normalises with one
    LayerNormalization per GroupNorm and holds no folded-away weight; the
    parity tests above run that graph."""
    onnx = pytest.importorskip('onnx')
    config, _, out, manifest = exported('classifier')
    assert manifest['backbone_form'] == 'deploy'
    graph = onnx.load(osp.join(out, manifest['parts'][0]['file'])).graph
    kinds = [n.op_type for n in graph.node]
    backbone = load_task_config(config)[0].model.backbone
    blocks = sum(FCViT.parse_arch(backbone.arch)['layers'])
    # the blocks' two norms and the classifier's one output norm
    assert kinds.count('LayerNormalization') == 2 * blocks + 1
    assert 'InstanceNormalization' not in kinds


@pytest.mark.parametrize('runtime', RUNTIMES)
@pytest.mark.parametrize('name', ['fpn', 'maskrcnn'])
def test_dynamic_batch_and_size(name, runtime, exported, reference):
    """The image graph of a dense model takes another batch size and image
    size than the export's and gives what PyTorch gives."""
    _, _, out, manifest = exported(name)
    torch_model, _ = reference(name)
    deployed = init_onnx_model(out, threads=1, runtime=runtime)
    part = manifest['parts'][0]['replaces']
    x = torch.rand(2, 3, 96, 160) * 2 - 1
    with torch.no_grad():
        if part == 'encode_decode':
            ref = [torch_model.encode_decode(
                x, [dict(img_shape=(96, 160), pad_shape=(96, 160))] * 2)]
        else:
            ref = list(torch_model.extract_feat(x))
    got = getattr(deployed, part)(x)
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    assert [g.shape for g in got] == [r.shape for r in ref]
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-3 * float(
            r.abs().max()))


def test_declared_dynamic_dims(exported):
    """What a shape-profile consumer (e.g. TensorRT) reads from the graph:
    batch, height and width of the image are named dynamic dims, and every
    pyramid level's height and width have names of their own (equal names
    would declare the levels equal in size)."""
    import onnx
    _, _, out, manifest = exported('maskrcnn')
    graph = onnx.load(osp.join(out, 'extract_feat.onnx')).graph

    def dims(value):
        return [d.dim_param or d.dim_value
                for d in value.type.tensor_type.shape.dim]
    (image, ) = graph.input
    assert [isinstance(d, str) for d in dims(image)] == [True, False, True,
                                                         True]
    names = []
    assert len(graph.output) == 5  # the FPN's levels
    for level in graph.output:
        batch, channels, h, w = dims(level)
        assert isinstance(batch, str) and isinstance(channels, int)
        assert isinstance(h, str) and isinstance(w, str), dims(level)
        names += [h, w]
    assert len(set(names)) == len(names), names


@pytest.mark.parametrize('precision', ['fp32', pytest.param(
    'bf16', marks=needs_openvino)])
def test_cli_checks_parity(precision, exported, image, tmp_path, capsys):
    """The one command: export a checkpoint and check it on an image (in
    OpenVINO where it is installed: the export itself is checked in ONNX
    Runtime), by the criteria of the precision it ran in."""
    config, ckpt, _, _ = exported('classifier')
    tool = load_tool('deployment/export_onnx')
    runtime = 'openvino' if HAVE_OPENVINO else 'onnxruntime'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', backends.PrecisionFallbackWarning)
        rc = tool.main([config, ckpt, str(tmp_path / 'out'), '--shape',
                        '80', '80', '--check-image', image, '--runtime',
                        runtime, '--precision', precision])
    assert rc == 0
    out = capsys.readouterr().out
    assert '"ok": true' in out and f'"runtime": "{runtime}"' in out
    runs = precision
    if precision == 'bf16' and not backends.openvino_cpu_has_bf16():
        runs = 'fp32'
    assert f'"precision": "{runs}"' in out


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
def test_checkpoint_of_another_config_is_refused(exported, tmp_path):
    config, ckpt, _, _ = exported('classifier')
    state = torch.load(ckpt, weights_only=True)['state_dict']
    wrong = dict(state)
    wrong['head.fc.weight'] = torch.zeros(5, 320)  # 5 classes, not 3
    wrong['head.fc.bias'] = torch.zeros(5)
    path = str(tmp_path / 'wrong.pth')
    torch.save({'state_dict': wrong}, path)
    with pytest.raises(CheckpointMismatchError,
                       match=r'(?s)does not fit .*head\.fc\.weight'):
        export_model(config, path, str(tmp_path / 'out'))
    partial = {k: v for k, v in state.items() if not k.startswith('head.')}
    torch.save({'state_dict': partial}, path)
    with pytest.raises(CheckpointMismatchError,
                       match=r'2 weights missing .*head\.fc\.weight'):
        export_model(config, path, str(tmp_path / 'out'))


def test_load_weights_reads_as_every_load(exported, tmp_path):
    """The export reads checkpoints through the project's one loading rule
    (models/checkpoint.py): DataParallel's ``module.`` prefix dropped, a
    missing file or a file without weights named."""
    from fcvit_mm.deploy import load_weights
    config, ckpt, _, _ = exported('classifier')
    state = torch.load(ckpt, weights_only=True)['state_dict']
    wrapped = str(tmp_path / 'wrapped.pth')
    torch.save({'state_dict': {'module.' + k: v for k, v in state.items()},
                'meta': {'epoch': 3}}, wrapped)
    model = build_model(load_task_config(config)[0])
    assert load_weights(model, wrapped) == {'epoch': 3}
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        load_weights(model, str(tmp_path / 'nowhere.pth'))
    empty = str(tmp_path / 'empty.pth')
    torch.save({'state_dict': {}}, empty)
    with pytest.raises(CheckpointMismatchError, match='holds no weights'):
        load_weights(model, empty)


@pytest.mark.parametrize('opset,exporter', [(9, 'torchscript'),
                                            (21, 'torchscript'),
                                            (17, 'dynamo')])
def test_unsupported_opset_is_refused(opset, exporter, tmp_path):
    with pytest.raises(ValueError, match=rf'opset {opset} is not supported '
                       rf'with the {exporter} exporter: choose one from'):
        export_model(osp.join(CFG, MODELS['classifier'][0]), None,
                     str(tmp_path), opset=opset, exporter=exporter)


@pytest.mark.parametrize('exporter', sorted(OPSETS))
def test_opset_range_ends(exporter):
    """Both ends of each exporter's range are accepted, one past either end
    is refused."""
    low, high = OPSETS[exporter]
    check_opset(low, exporter)
    check_opset(high, exporter)
    for opset in (low - 1, high + 1):
        with pytest.raises(ValueError, match=rf'opset {opset} is not '
                           rf'supported .* from {low} to {high}'):
            check_opset(opset, exporter)


@pytest.fixture(scope='module')
def static_classifier(exported, tmp_path_factory):
    """The classifier exported with fixed batch and size (64 x 64)."""
    config, ckpt, _, _ = exported('classifier')
    out = str(tmp_path_factory.mktemp('static'))
    export_model(config, ckpt, out, shape=(64, 64), dynamic=False)
    return out


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_input_the_export_cannot_take(runtime, exported, static_classifier):
    """A static export refuses another size, a dynamic one an image
    smaller than the backbone's stride, naming the problem (not a runtime
    error)."""
    _, _, out, _ = exported('classifier')
    dynamic = init_onnx_model(out, threads=1, runtime=runtime)
    with pytest.raises(ValueError, match='at least 32 x 32 pixels'):
        dynamic.extract_feat(torch.rand(1, 3, 16, 64))
    with pytest.raises(ValueError, match='4 dims'):
        dynamic.extract_feat(torch.rand(3, 64, 64))
    static = init_onnx_model(static_classifier, threads=1, runtime=runtime)
    assert static.extract_feat(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ValueError, match=r'static shape.*got \(1, 3, 96, 64'):
        static.extract_feat(torch.rand(1, 3, 96, 64))


def test_runtime_names_and_missing_openvino(exported, monkeypatch):
    """An unknown runtime names the valid ones; OpenVINO missing names the
    extra and the pinned version (simulated by hiding the module)."""
    _, _, out, _ = exported('classifier')
    with pytest.raises(ValueError, match=r"unknown runtime 'tensorrt': "
                       r"choose one of 'onnxruntime', 'openvino'"):
        init_onnx_model(out, runtime='tensorrt')
    with pytest.raises(ValueError, match="providers is an option of "
                       "runtime 'onnxruntime', not of runtime='openvino'"):
        init_onnx_model(out, runtime='openvino',
                        providers=['CPUExecutionProvider'])
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import fails
    monkeypatch.setattr(backends, '_core', None)
    with pytest.raises(ImportError, match=r'(?s)openvino.*not installed: '
                       r'pip install -e \.\[openvino\].*openvino=='
                       + backends.OPENVINO_VERSION.replace('.', r'\.')):
        init_onnx_model(out, runtime='openvino')
    # the version the message names is the one the project pins
    with open(osp.join(ROOT, 'requirements', 'constraints.txt')) as f:
        pins = [line.strip() for line in f]
    assert f'openvino=={backends.OPENVINO_VERSION}' in pins


class _RenamedOrt:
    """The session of a runtime that only the test's table entry knows:
    ONNX Runtime under another name, counting its runs."""
    runtime = 'renamed-ort'

    def __init__(self, path, threads=None, precision='fp32'):
        self._session = backends.OrtSession(path, threads)
        self.inputs = self._session.inputs
        self.precision = precision
        self.runs = 0

    def run(self, feed):
        self.runs += 1
        return self._session.run(feed)


def test_a_runtime_is_one_table_entry(exported, monkeypatch):
    """A runtime added as one entry of the table is offered by both tools'
    --runtime choices and opened by open_session and init_onnx_model, with
    nothing else edited."""
    monkeypatch.setattr(backends, 'RUNTIMES', dict(backends.RUNTIMES))
    backends.register_runtime(backends.Runtime(
        'renamed-ort', 'onnxruntime', 'pip install onnxruntime',
        _RenamedOrt))
    export_tool = load_tool('deployment/export_onnx')
    args = export_tool.parse_args(['c.py', 'w.pth', 'out', '--runtime',
                                   'renamed-ort'])
    assert args.runtime == 'renamed-ort'
    bench = load_tool('deployment/benchmark_onnx')
    args = bench.parse_args(['--runtimes', 'eager', 'renamed-ort',
                             '--precision', 'fp32', 'bf16'])
    assert bench.deployed_columns(args) == {
        'renamed-ort fp32': ('renamed-ort', 'fp32')}
    _, _, out, manifest = exported('classifier')
    path = osp.join(out, manifest['parts'][0]['file'])
    assert isinstance(backends.open_session(path, 'renamed-ort'),
                      _RenamedOrt)
    model = init_onnx_model(out, threads=1, runtime='renamed-ort')
    assert (model.onnx_runtime, model.onnx_precision) == ('renamed-ort',
                                                          'fp32')
    part = model.onnx_parts['classifier']
    assert isinstance(part.session, _RenamedOrt)
    assert model.extract_feat(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    assert part.session.runs == 1
    with pytest.raises(ValueError, match="runtime='renamed-ort' runs "
                       "precision 'fp32', not 'bf16'"):
        init_onnx_model(out, runtime='renamed-ort', precision='bf16')
    del backends.RUNTIMES['renamed-ort']
    with pytest.raises(ValueError, match="unknown runtime 'renamed-ort'"):
        init_onnx_model(out, runtime='renamed-ort')


def test_precisions_each_runtime_runs(exported):
    """float32 is every runtime's default; bf16 asked of ONNX Runtime (or
    a precision no runtime has) is refused, naming what it runs."""
    _, _, out, _ = exported('classifier')
    assert init_onnx_model(out, threads=1).onnx_precision == 'fp32'
    with pytest.raises(ValueError, match="runtime='onnxruntime' runs "
                       "precision 'fp32', not 'bf16'"):
        init_onnx_model(out, precision='bf16')
    with pytest.raises(ValueError, match="runtime='openvino' runs "
                       "precision 'fp32' or 'bf16', not 'fp16'"):
        backends.check_runtime('openvino', 'fp16')


def _hint(session) -> str:
    """The inference precision OpenVINO compiled ``session``'s graph in."""
    return str(session.compiled.get_property('INFERENCE_PRECISION_HINT'))


@needs_openvino
def test_openvino_compiles_the_precision_asked(exported):
    """The compiled model's INFERENCE_PRECISION_HINT is f32 by default and
    bf16 when asked, on a CPU with bf16; on one without, bf16 falls back
    to f32, saying why (so this holds on any CPU)."""
    import openvino as ov
    _, _, out, manifest = exported('classifier')
    path = osp.join(out, manifest['parts'][0]['file'])
    fp32 = backends.open_session(path, 'openvino', 1)
    assert fp32.precision == 'fp32'
    assert _hint(fp32) == str(ov.Type.f32)
    if backends.openvino_cpu_has_bf16():
        bf16 = backends.open_session(path, 'openvino', 1, 'bf16')
        assert (bf16.precision, _hint(bf16)) == ('bf16', str(ov.Type.bf16))
    else:
        with pytest.warns(backends.PrecisionFallbackWarning,
                          match='no bf16 support'):
            bf16 = backends.open_session(path, 'openvino', 1, 'bf16')
        assert (bf16.precision, _hint(bf16)) == ('fp32', str(ov.Type.f32))


@needs_openvino
def test_bf16_on_a_cpu_without_bf16_runs_float32(exported, monkeypatch):
    """On a CPU whose OpenVINO has no BF16 capability (simulated), bf16
    runs float32: one warning naming why, every graph compiled in f32."""
    import openvino as ov
    monkeypatch.setattr(backends, 'openvino_cpu_has_bf16', lambda: False)
    _, _, out, _ = exported('maskrcnn')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model = init_onnx_model(out, threads=1, runtime='openvino',
                                precision='bf16')
    said = [str(w.message) for w in caught
            if issubclass(w.category, backends.PrecisionFallbackWarning)]
    assert said == ["precision='bf16' in openvino: this CPU has no bf16 "
                    "support (OpenVINO's CPU OPTIMIZATION_CAPABILITIES has "
                    "no BF16); running float32 (precision='fp32') instead"]
    assert model.onnx_precision == 'fp32'
    assert len(model.onnx_parts) == 4
    for part in model.onnx_parts.values():
        assert _hint(part.session) == str(ov.Type.f32)


@needs_openvino
def test_bf16_off_by_the_cpu_switch(monkeypatch):
    """``FCVIT_MM_CPU_BF16=0`` (fcvit_mm.utils.cpu) turns bf16 deployment
    off as it turns bf16 training off: bf16 runs float32, saying why."""
    monkeypatch.setattr(backends, 'openvino_cpu_has_bf16', lambda: True)
    monkeypatch.setenv('FCVIT_MM_CPU_BF16', '0')
    with pytest.warns(backends.PrecisionFallbackWarning,
                      match='no native bf16: FCVIT_MM_CPU_BF16=0'):
        assert backends.session_precision('openvino', 'bf16') == 'fp32'
    monkeypatch.setenv('FCVIT_MM_CPU_BF16', '1')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert backends.session_precision('openvino', 'bf16') == 'bf16'


@pytest.mark.slow
@needs_openvino
@pytest.mark.parametrize('name', list(MODELS))
def test_bf16_parity_with_library_inference(name, exported, reference,
                                            image):
    """OpenVINO in bf16 meets the bf16 criteria of docs/deployment.md
    against the PyTorch model (float32 where the CPU has no bf16: the
    stricter criteria then hold too)."""
    _, _, out, _ = exported(name)
    task = TASKS[name]
    _, ref = reference(name)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', backends.PrecisionFallbackWarning)
        deployed = init_onnx_model(out, threads=1, runtime='openvino',
                                   precision='bf16')
    runs = 'bf16' if backends.openvino_cpu_has_bf16() else 'fp32'
    assert deployed.onnx_precision == runs
    assert {p.session.precision for p in deployed.onnx_parts.values()} == {
        runs}
    got = library_inference(deployed, task, image)
    kwargs = dict(score_thr=0.05) if task == 'detection' else {}
    res = compare(task, ref, got, 'bf16', **kwargs)
    assert res['ok'], res
    if task == 'detection':
        assert res['ref_count'] >= 3, res  # something to compare
    if task == 'classification':
        assert got['pred_class'] == ref['pred_class']


# --------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------
@pytest.mark.parametrize('out', [1, 2, 3, 6])
def test_matrix_adaptive_pool_is_adaptive_avg_pool(out):
    """UperNet's pyramid pooling, written for export, has torch's bins at
    sizes that are and are not multiples of the output size."""
    from fcvit_mm.deploy.rewrites import (MatrixAdaptiveAvgPool2d,
                                          make_exportable)
    for h, w in ((7, 9), (16, 16), (13, 5), (6, 32)):
        x = torch.randn(2, 4, h, w)
        torch.testing.assert_close(MatrixAdaptiveAvgPool2d((out, out))(x),
                                   torch.nn.AdaptiveAvgPool2d(out)(x))
    seq = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(out))
    assert make_exportable(seq) == (out != 1)


def test_structure_round_trip():
    from fcvit_mm.deploy.structure import flatten, unflatten
    t = [torch.zeros(i) for i in range(5)]
    obj = ([t[0], t[1]], [t[2], t[3]], (t[4], ))
    flat, spec = flatten(obj)
    assert [x.numel() for x in flat] == [0, 1, 2, 3, 4]
    back = unflatten(flat, spec)
    assert isinstance(back, tuple) and isinstance(back[0], list)
    assert all(a is b for a, b in zip(flatten(back)[0], flat))
    with pytest.raises(ValueError, match='left over'):
        unflatten(flat + [t[0]], spec)


@pytest.mark.parametrize('which', ['scale', 'bias'])
def test_lowering_keeps_an_affine_with_one_neutral_element(which):
    """ONNX Runtime's lowering of LayerNormalization leaves out a scale of
    all ones and a shift of all zeros, and only those: a GroupNorm scale
    with one element exactly 1.0 (or a shift with one exactly 0.0) is
    still applied, and the lowered graph computes what the original
    does."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from fcvit_mm.deploy.lowering import layer_norm_to_instance_norm
    scale = np.array([1.0, 0.5, 2.0], np.float32).reshape(3, 1, 1)
    bias = np.array([0.0, 0.3, -0.2], np.float32).reshape(3, 1, 1)
    if which == 'scale':
        bias = np.zeros_like(bias)
    else:
        scale = np.ones_like(scale)
    graph = helper.make_graph(
        [helper.make_node('LayerNormalization', ['x', 'scale', 'bias'],
                          ['y'], axis=1, epsilon=1e-5)], 'ln',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT,
                                       [2, 3, 4, 5])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT,
                                       [2, 3, 4, 5])],
        [numpy_helper.from_array(scale, 'scale'),
         numpy_helper.from_array(bias, 'bias')])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid('', 17)])
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(
        np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=[
            'CPUExecutionProvider']).run(None, {'x': x})[0]
    ref = run(model)
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    assert layer_norm_to_instance_norm(lowered) == 1
    kinds = [n.op_type for n in lowered.graph.node]
    assert ('Mul' in kinds, 'Add' in kinds) == (which == 'scale',
                                                which == 'bias')
    np.testing.assert_allclose(run(lowered), ref, rtol=1e-5, atol=1e-5)


def _detections(boxes, scores=None, labels=None):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    boxes = torch.tensor(boxes, dtype=torch.float32)
    sample = DetDataSample()
    sample.pred_instances = InstanceData(
        bboxes=boxes,
        scores=torch.tensor(scores or [0.9] * len(boxes)),
        labels=torch.tensor(labels or [0] * len(boxes)))
    return sample


def test_detections_agreeing_in_one_coordinate_differ():
    """compare_detections pairs boxes only if every coordinate is within
    the tolerance: a box that agrees in x1 alone is no partner (both
    sides then have one unmatched detection)."""
    from fcvit_mm.deploy.parity import compare_detections
    ref = _detections([[10., 10., 50., 50.]])
    near = _detections([[10.5, 9.6, 50.2, 49.5]])
    assert compare_detections(ref, near)['ok']
    far = _detections([[10., 30., 70., 90.]])
    res = compare_detections(ref, far)
    assert not res['ok'] and res['unmatched'] == 2, res


def test_bf16_criteria_of_the_comparators():
    """bf16 parity (docs/deployment.md): detections paired by IoU >= 0.9
    and score within 0.02; classification: the same top-1 and top-5 set,
    scores within 0.01; segmentation: >= 99% of the pixels."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    ref = _detections([[10., 10., 110., 110.]], [0.9])
    shifted = _detections([[12., 12., 112., 112.]], [0.89])  # IoU 0.92
    assert not compare('detection', ref, shifted)['ok']  # float32: 2 px
    res = compare('detection', ref, shifted, 'bf16')
    assert res['ok'] and res['min_box_iou'] == pytest.approx(9604 / 10396)
    moved = _detections([[16., 16., 116., 116.]], [0.9])  # IoU 0.79
    assert not compare('detection', ref, moved, 'bf16')['ok']
    off = _detections([[10., 10., 110., 110.]], [0.86])
    assert not compare('detection', ref, off, 'bf16')['ok']

    scores = np.array([0.5, 0.2, 0.195, 0.05, 0.04, 0.015])
    swapped = scores[[0, 2, 1, 3, 4, 5]]  # ranks 2 and 3 swap
    ref, got = dict(pred_scores=scores), dict(pred_scores=swapped)
    assert not compare('classification', ref, got)['ok']
    assert compare('classification', ref, got, 'bf16')['ok']
    other_top1 = dict(pred_scores=scores[[1, 0, 2, 3, 4, 5]])
    assert not compare('classification', ref, other_top1, 'bf16')['ok']
    far = dict(pred_scores=scores + np.array([0.02, 0, 0, 0, 0, -0.02]))
    assert not compare('classification', ref, far, 'bf16')['ok']

    def seg(labels):
        sample = SegDataSample()
        sample.pred_sem_seg = PixelData(data=torch.tensor(labels)[None])
        return sample
    a = np.zeros((10, 20), np.int64)
    b = a.copy()
    b[0, :2] = 1  # 99% of the pixels agree
    assert not compare('segmentation', seg(a), seg(b))['ok']
    assert compare('segmentation', seg(a), seg(b), 'bf16')['ok']
    b[1, 0] = 1
    assert not compare('segmentation', seg(a), seg(b), 'bf16')['ok']
    with pytest.raises(ValueError, match="precision 'fp16'"):
        compare('segmentation', seg(a), seg(b), 'fp16')

