"""The backbone through the exporters, both formulations, with no other
setting: what ``torch.export`` and ONNX (TorchScript-based, as mmdeploy
drives it, and dynamo-based) produce computes what eager computes, at the
traced size and at another one (dynamic height, width and batch), and holds
only standard ops (none of the CPU kernels of the eager fast path); and
``fcvit_mm.deploy``'s export chooses the kernels of the form it writes."""
import pytest
import torch
import torch.nn as nn

import fcvit_mm  # noqa: F401
from fcvit_mm.models import FCViT
from fcvit_mm.models.backbones.fcvit import FastPathMixin
# one_thread: an autouse fixture for this module
from helpers import one_thread  # noqa: F401
from helpers import TINY_ARCH, assert_rel_close, randomize_params

PATHS = pytest.mark.parametrize('fast_path', ['auto', False],
                                ids=['default', 'plain'])
#: ops the eager fast path may run on CPU that no exporter should see
CPU_ONLY_OPS = ('mkldnn', 'fft', 'addmv')


def _model(fast_path):
    torch.manual_seed(0)
    return randomize_params(FCViT(arch=TINY_ARCH,
                                  fast_path=fast_path)).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, 3, 37, 45, generator=g),
            torch.randn(1, 3, 50, 33, generator=g))


def _assert_same(outs, model, x, rtol, what):
    with torch.no_grad():
        ref = model(x)
    assert len(outs) == len(ref) == 4, what
    for i, (a, b) in enumerate(zip(outs, ref)):
        assert_rel_close(torch.as_tensor(a), b, rtol, f'{what} output {i}')


def _dynamic_shapes():
    dim = torch.export.Dim.DYNAMIC
    return {'x': {0: dim, 2: dim, 3: dim}}


_EXPORTED = {}


def _exported(fast_path):
    """``(model, torch.export program)`` of a path, exported once for this
    module's two tests that use it (dynamic batch, height and width)."""
    if fast_path not in _EXPORTED:
        model = _model(fast_path)
        # no_grad: where eager inference would take oneDNN's fused kernels
        with torch.no_grad():
            ep = torch.export.export(model, (_inputs()[0], ),
                                     dynamic_shapes=_dynamic_shapes())
        _EXPORTED[fast_path] = model, ep
    return _EXPORTED[fast_path]


@pytest.mark.slow
@PATHS
def test_torch_export(fast_path):
    model, ep = _exported(fast_path)
    ops = {str(n.target) for n in ep.graph.nodes if n.op == 'call_function'}
    assert not [t for t in ops if any(s in t for s in CPU_ONLY_OPS)], ops
    exported = ep.module()
    for x in _inputs():
        with torch.no_grad():
            outs = exported(x)
        _assert_same(outs, model, x, 1e-5, f'export {tuple(x.shape)}')


def _onnx_session(path):
    ort = pytest.importorskip('onnxruntime')
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts,
                                providers=['CPUExecutionProvider'])


def _check_onnx(path, model, what):
    onnx = pytest.importorskip('onnx')
    graph_ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not [t for t in graph_ops
                if any(s in t.lower() for s in CPU_ONLY_OPS)], graph_ops
    sess = _onnx_session(path)
    name = sess.get_inputs()[0].name
    for x in _inputs():
        outs = sess.run(None, {name: x.numpy()})
        _assert_same(outs, model, x, 1e-4, f'{what} {tuple(x.shape)}')


@pytest.mark.parametrize('fast_path,kernels',
                         [('auto', None), (False, None), (False, 'onnx')],
                         ids=['default', 'plain', 'onnx'])
def test_onnx_torchscript_export(fast_path, kernels, tmp_path):
    pytest.importorskip('onnx')
    model = _model(fast_path)
    if kernels:
        model.kernels = kernels
    path = tmp_path / 'fcvit.onnx'
    names = [f'out{i}' for i in range(4)]
    torch.onnx.export(
        model, (_inputs()[0], ), str(path), dynamo=False, opset_version=17,
        input_names=['x'], output_names=names,
        dynamic_axes={'x': {0: 'batch', 2: 'height', 3: 'width'},
                      **{n: {0: 'batch', 2: 'h', 3: 'w'} for n in names}})
    _check_onnx(path, model, 'onnx (TorchScript)')


@pytest.mark.slow
@PATHS
def test_onnx_dynamo_export(fast_path, tmp_path):
    """The dynamo-based ONNX exporter (from the program of
    :func:`test_torch_export`: the same graph capture)."""
    pytest.importorskip('onnxscript')
    model, ep = _exported(fast_path)
    path = tmp_path / 'fcvit.onnx'
    program = torch.onnx.export(ep, dynamo=True, verbose=False)
    program.save(str(path))
    _check_onnx(path, model, 'onnx (dynamo)')


@pytest.mark.parametrize('form,kernels', [('deploy', 'onnx'),
                                          ('plain', 'onnx'),
                                          ('fast', 'standard'),
                                          ('config', 'cpu')])
def test_export_sets_the_kernels_of_its_form(form, kernels):
    """``fcvit_mm.deploy``'s export puts every FCViT module of the model it
    exports on the kernels of the backbone form it writes (the ONNX form
    for the plain formulation); ``'config'`` leaves them as built."""
    from fcvit_mm.deploy.export import set_backbone_form
    model = nn.Sequential(nn.Identity(), FCViT(arch=TINY_ARCH)).eval()
    set_backbone_form(model, form)
    assert {m.kernels for m in model.modules()
            if isinstance(m, FastPathMixin)} == {kernels}
