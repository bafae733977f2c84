"""Deployment: config + checkpoint -> ONNX -> ONNX Runtime, against the
library's own inference (tools/deployment/export_onnx.py, fcvit_mm.deploy).

Per task, a tiny model of each config family (FCViT-tiny, slim heads, 3-4
classes) is saved as a checkpoint, exported at one size, and run on an
image that the test pipeline brings to another size; the library's own
inference function (mmdet ``inference_detector``, mmseg
``inference_model``, mmpretrain ``ImageClassificationInferencer``) runs the
PyTorch model loaded from the checkpoint and the exported model, and the
results must agree as docs/deployment.md promises. The exports are made once
per module. Needs the ``deploy`` extra (onnx, onnxruntime, onnxscript).
"""
import os.path as osp

import numpy as np
import pytest
import torch
from helpers import load_tool, one_thread  # noqa: F401

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from fcvit_mm.deploy import (CheckpointMismatchError, export_model,  # noqa
                             init_onnx_model)
from fcvit_mm.deploy.export import build_model, load_config  # noqa: E402
from fcvit_mm.deploy.parity import (COMPARE, init_library_model,  # noqa
                                    library_inference)

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
    'maskrcnn': ('detection/demo_maskrcnn_fcvit_tiny_shapes.py', {},
                 (64, 64)),
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
    cfg, _ = load_config(osp.join(CFG, rel), dict(options))
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


def _torch_model(name, config, ckpt):
    return init_library_model(config, ckpt)


@pytest.mark.slow
@pytest.mark.parametrize('name', list(MODELS))
def test_parity_with_library_inference(name, exported, image):
    """The library's inference gives the same result with the export in
    ONNX Runtime as with the PyTorch model, on an image the pipeline brings
    to another size than the export's."""
    config, ckpt, out, manifest = exported(name)
    task = TASKS[name]
    assert manifest['task'] == task
    ref = library_inference(_torch_model(name, config, ckpt), task, image)
    onnx_model = init_onnx_model(out, threads=1)
    got = library_inference(onnx_model, task, image)
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


@pytest.mark.parametrize('name', ['fpn', 'maskrcnn'])
def test_dynamic_batch_and_size(name, exported):
    """The image graph of a dense model takes another batch size and image
    size than the export's and gives what PyTorch gives."""
    config, ckpt, out, manifest = exported(name)
    torch_model = _torch_model(name, config, ckpt)
    onnx_model = init_onnx_model(out, threads=1)
    part = manifest['parts'][0]['replaces']
    x = torch.rand(2, 3, 96, 160) * 2 - 1
    with torch.no_grad():
        if part == 'encode_decode':
            ref = [torch_model.encode_decode(
                x, [dict(img_shape=(96, 160), pad_shape=(96, 160))] * 2)]
        else:
            ref = list(torch_model.extract_feat(x))
    got = getattr(onnx_model, part)(x)
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    assert [g.shape for g in got] == [r.shape for r in ref]
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-3 * float(
            r.abs().max()))


def test_cli_checks_parity(exported, image, tmp_path, capsys):
    """The one command: export a checkpoint and check it on an image."""
    config, ckpt, _, _ = exported('classifier')
    tool = load_tool('deployment/export_onnx')
    rc = tool.main([config, ckpt, str(tmp_path / 'out'), '--shape', '80',
                    '80', '--check-image', image])
    assert rc == 0
    assert '"ok": true' in capsys.readouterr().out


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


@pytest.mark.parametrize('opset,exporter', [(9, 'torchscript'),
                                            (21, 'torchscript'),
                                            (17, 'dynamo')])
def test_unsupported_opset_is_refused(opset, exporter, tmp_path):
    with pytest.raises(ValueError, match=rf'opset {opset} is not supported '
                       rf'with the {exporter} exporter: choose one from'):
        export_model(osp.join(CFG, MODELS['classifier'][0]), None,
                     str(tmp_path), opset=opset, exporter=exporter)


def test_input_the_export_cannot_take(exported, tmp_path):
    """A static export refuses another size, a dynamic one an image
    smaller than the backbone's stride, naming the problem (not an ONNX
    Runtime error)."""
    config, ckpt, out, _ = exported('classifier')
    dynamic = init_onnx_model(out, threads=1)
    with pytest.raises(ValueError, match='at least 32 x 32 pixels'):
        dynamic.extract_feat(torch.rand(1, 3, 16, 64))
    with pytest.raises(ValueError, match='4 dims'):
        dynamic.extract_feat(torch.rand(3, 64, 64))
    export_model(config, ckpt, str(tmp_path), shape=(64, 64), dynamic=False)
    static = init_onnx_model(str(tmp_path), threads=1)
    assert static.extract_feat(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ValueError, match=r'static shape.*got \(1, 3, 96, 64'):
        static.extract_feat(torch.rand(1, 3, 96, 64))


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
