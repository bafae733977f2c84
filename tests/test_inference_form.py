"""FCViT's inference form (``switch_to_deploy``) and the ONNX forms of its
one-group GroupNorm and global context (the ``'onnx'`` kernels): each
rewrite is exact against the training form (float64 where possible), on odd
sizes, batch 1 and 3, and the runtimes run the exported graph to float
rounding."""
import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from fcvit_mm.models import FCViT
from fcvit_mm.models.backbones import fcvit_ops as ops
from fcvit_mm.models.backbones.fcvit import FCViTBlock, GlobalContext

MINI = dict(layers=[1, 1, 2, 1], embed_dims=[32, 64, 96, 128],
            mlp_ratios=[8, 8, 4, 4])


def _randomised(model: nn.Module) -> nn.Module:
    """Every affine and layer scale away from its initial value, so that a
    fold that drops one of them shows."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.GroupNorm) and m.affine:
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + .5
            m.bias.data = torch.rand(m.bias.shape, generator=gen) - .5
        if isinstance(m, FCViTBlock):
            for ls in (m.layer_scale_1, m.layer_scale_2):
                ls.data = torch.rand(ls.shape, generator=gen) + .5
        if isinstance(m, GlobalContext):
            m.rescale_weight.data = torch.rand(m.heads, generator=gen) + .5
            m.rescale_bias.data = torch.rand(m.heads, generator=gen) - .5
    return model


@pytest.fixture(scope='module')
def mini():
    torch.manual_seed(0)
    return _randomised(FCViT(MINI, out_indices=(0, 1, 2, 3))).eval()


@pytest.mark.parametrize('kernels', ['plain', 'cpu', 'onnx'])
@pytest.mark.parametrize('shape', [(1, 3, 97, 131), (3, 3, 64, 72)])
def test_switch_to_deploy_is_exact(mini, kernels, shape):
    model = copy.deepcopy(mini).double()
    model.kernels = kernels
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        model.switch_to_deploy()
        got = model(x)
    assert model.deploy
    assert len(got) == len(ref) == 4
    for r, g in zip(ref, got):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=0, atol=1e-10)


#: the block shapes (widths, MLP ratios) of the published variants, one
#: block per stage (b24 and b48 are b12's blocks, more of them)
VARIANT_BLOCKS = sorted({(tuple(a['embed_dims']), tuple(a['mlp_ratios']))
                         for a in FCViT.arch_settings.values()})


@pytest.mark.parametrize('dims,ratios', VARIANT_BLOCKS)
def test_switch_to_deploy_is_exact_for_every_variant(dims, ratios):
    """Every published variant's blocks, the classifier layout (one output
    norm), batch 2 at an odd size, float64."""
    assert len(VARIANT_BLOCKS) == 2  # tiny's and b12's (= b24's, b48's)
    torch.manual_seed(0)
    arch = dict(layers=[1] * 4, embed_dims=list(dims),
                mlp_ratios=list(ratios))
    model = _randomised(FCViT(arch, out_indices=(3, ))).double().eval()
    model.kernels = 'plain'
    x = torch.randn(2, 3, 41, 57, dtype=torch.float64)
    with torch.no_grad():
        (ref, ) = model(x)
        model.switch_to_deploy()
        (got, ) = model(x)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_switch_to_deploy_folds_what_it_says(mini):
    model = copy.deepcopy(mini)
    before = set(model.state_dict())
    model.switch_to_deploy()
    after = set(model.state_dict())
    gone = before - after
    blocks = [m for m in model.modules() if isinstance(m, FCViTBlock)]
    assert gone == {k for k in before if '.blocks.' in k and k.endswith(
        ('.norm2.weight', '.norm2.bias', '.layer_scale_2'))}
    assert 'norm2.weight' in after  # stage 2's output norm keeps its own
    assert len(gone) == 3 * len(blocks)
    assert all(b.layer_scale_2 is None and not b.norm2.affine
               for b in blocks)
    # idempotent: a second switch changes nothing
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.switch_to_deploy()
    assert all(torch.equal(state[k], v)
               for k, v in model.state_dict().items())


def test_global_context_onnx_form_is_exact():
    torch.manual_seed(0)
    gc = _randomised(GlobalContext(64)).double()
    gc.kernels = 'plain'
    onnx_gc = copy.deepcopy(gc)
    onnx_gc.kernels = 'onnx'
    for shape in [(1, 64, 7, 9), (3, 64, 12, 5)]:
        x = torch.randn(*shape, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(gc._add_onnx(x), x + gc(x), rtol=0,
                                       atol=1e-12)
            torch.testing.assert_close(onnx_gc.add_to(x), gc.add_to(x),
                                       rtol=0, atol=1e-12)


def _export(model, path, shape=(1, 3, 96, 128)):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the exporter's own notices
        torch.onnx.export(model, (torch.rand(*shape), ), path, dynamo=False,
                          opset_version=17, input_names=['x'],
                          dynamic_axes={'x': {0: 'b', 2: 'h', 3: 'w'}})


def test_onnx_forms_in_the_graph_and_the_runtimes(mini, tmp_path):
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    from fcvit_mm.deploy.lowering import layer_norm_to_instance_norm
    model = copy.deepcopy(mini)
    model.kernels = 'onnx'
    model.switch_to_deploy()
    path = str(tmp_path / 'fcvit.onnx')
    _export(model, path)
    graph = onnx.load(path)
    ops_used = [n.op_type for n in graph.graph.node]
    blocks = sum(1 for m in model.modules() if isinstance(m, FCViTBlock))
    # two per block and the four output norms, each ONE op
    assert ops_used.count('LayerNormalization') == 2 * blocks + 4
    assert 'InstanceNormalization' not in ops_used
    assert 'MatMul' not in ops_used  # no per-head reshapes and products

    x = torch.randn(3, 3, 80, 112)  # another batch and size than exported
    with torch.no_grad():
        ref = [t.numpy() for t in mini(x)]
    lowered = onnx.load(path)
    assert layer_norm_to_instance_norm(lowered) == 2 * blocks + 4
    lowered_ops = [n.op_type for n in lowered.graph.node]
    assert 'LayerNormalization' not in lowered_ops
    assert lowered_ops.count('InstanceNormalization') == 2 * blocks + 4
    sess = ort.InferenceSession(lowered.SerializeToString(),
                                providers=['CPUExecutionProvider'])
    for r, g in zip(ref, sess.run(None, {'x': x.numpy()})):
        np.testing.assert_allclose(g, r, rtol=0, atol=2e-4)
    ov = pytest.importorskip('openvino')
    compiled = ov.Core().compile_model(path, 'CPU',
                                       {'INFERENCE_PRECISION_HINT': 'f32'})
    outs = compiled({0: x.numpy()})
    for i, r in enumerate(ref):
        np.testing.assert_allclose(outs[i], r, rtol=0, atol=2e-4)


def test_lowering_keeps_the_affine_and_leaves_the_rest(tmp_path):
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    from fcvit_mm.deploy.lowering import layer_norm_to_instance_norm

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = _randomised(nn.GroupNorm(1, 6))
            self.b = nn.GroupNorm(1, 6, affine=False)
            self.c = nn.LayerNorm(5)  # axis=-1: not ours, left alone

        def forward(self, x):
            a = ops.group_norm1(x, self.a, kernels='onnx')
            return self.c(ops.group_norm1(a, self.b, kernels='onnx'))

    model = Two().eval()
    path = str(tmp_path / 'two.onnx')
    _export(model, path, shape=(2, 6, 4, 5))
    graph = onnx.load(path)
    assert layer_norm_to_instance_norm(graph) == 2
    kinds = [n.op_type for n in graph.graph.node]
    assert kinds.count('LayerNormalization') == 1  # the axis=-1 one
    assert kinds.count('Mul') == 1 and kinds.count('Add') == 1  # a's only
    x = torch.randn(3, 6, 7, 5)
    sess = ort.InferenceSession(graph.SerializeToString(),
                                providers=['CPUExecutionProvider'])
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(sess.run(None, {'x': x.numpy()})[0], ref,
                               rtol=0, atol=1e-5)
