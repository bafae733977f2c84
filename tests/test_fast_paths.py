"""The fast execution paths against the plain formulation: outputs and
gradients, several shapes, train and eval, float64 (the algebra) and float32
(the kernels actually used); and the kernel set each module decides (from
``fast_path`` and its parameters' device, at construction, on ``.to()``,
``.train()`` and by hand), which a forward only reads."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fcvit_mm  # noqa: F401
from fcvit_mm.models import FCViT
from fcvit_mm.models.backbones import fcvit_ops
from fcvit_mm.models.backbones.fcvit import (ChannelMixer, FCViTBlock,
                                             FastPathMixin, GlobalContext,
                                             TokenMixer, using_kernels)
# one_thread: an autouse fixture for this module
from helpers import one_thread  # noqa: F401
from helpers import BN_BIASES, assert_rel_close, randomize_params

MINI = dict(layers=[1, 1, 2, 1], embed_dims=[32, 64, 96, 128],
            mlp_ratios=[8, 8, 4, 4])


def _run(model, x, train):
    model.train(train)
    x = x.clone().requires_grad_(True)
    outs = model(x)
    outs = outs if isinstance(outs, (tuple, list)) else (outs, )
    # a loss that weighs every position differently
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype,
                                   device=o.device).view(
        o.shape)).sum() + o.square().sum() for o in outs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()
             if p.grad is not None}
    grads['input'] = x.grad.clone()
    return [o.detach() for o in outs], grads


def _compare(fast, plain, x, train, rtol, skip=()):
    out_f, g_f = _run(fast, x, train)
    out_p, g_p = _run(plain, x, train)
    assert len(out_f) == len(out_p)
    for i, (a, b) in enumerate(zip(out_f, out_p)):
        assert_rel_close(a, b, rtol, f'output {i}')
    assert sorted(g_f) == sorted(g_p)
    for n in g_p:
        if any(s in n for s in skip):
            continue
        assert_rel_close(g_f[n], g_p[n], rtol, f'grad {n}')


@pytest.mark.parametrize('dim,hw,batch', [(32, (7, 9), 2), (64, (6, 7), 2),
                                          (16, (3, 5), 1)])
@pytest.mark.parametrize('train', [False, True])
def test_block_float64_exact_algebra(dim, hw, batch, train):
    torch.manual_seed(0)
    plain = randomize_params(
        FCViTBlock(dim, 4, layer_scale_init_value=1.)).double()
    plain.fast_path = False
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    x = torch.randn(batch, dim, *hw, dtype=torch.float64)
    _compare(fast, plain, x, train, rtol=1e-10)


@pytest.mark.parametrize('hw', [(12, 20), (5, 5)])
@pytest.mark.parametrize('train', [False, True])
def test_block_float32_kernels(hw, train):
    torch.manual_seed(1)
    plain = randomize_params(FCViTBlock(48, 8, layer_scale_init_value=1.))
    plain.fast_path = False
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    x = torch.randn(2, 48, *hw)
    _compare(fast, plain, x, train, rtol=1e-5)


def test_block_eval_no_grad_uses_fused_kernels():
    """In inference (CPU, float32, no autograd) the oneDNN fused kernels run
    and give the plain result."""
    plain = randomize_params(
        FCViTBlock(32, 8, layer_scale_init_value=1.)).eval()
    plain.fast_path = False
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    x = torch.randn(2, 32, 10, 13)
    with torch.no_grad(), fcvit_ops.KernelRecorder() as rec:
        ref = plain(x)
        out = fast(x)
    assert_rel_close(out, ref, 1e-5)
    # the fast block's 6 products and 3 depthwise convolutions, no others
    assert len(rec.gemms) == 6 and len(rec.depthwise) == 3
    if torch.backends.mkldnn.is_available():
        assert all(c.fused for c in rec.calls)
    # with autograd on, the differentiable kernels are used
    with fcvit_ops.KernelRecorder() as rec:
        fast(x.requires_grad_())
    assert rec.calls and not any(c.fused for c in rec.calls)


@pytest.mark.parametrize('size', [(64, 80), (41, 35)])
@pytest.mark.parametrize('train', [False, True])
def test_backbone_fast_equals_plain(size, train):
    torch.manual_seed(2)
    plain = randomize_params(FCViT(arch=MINI, fast_path=False))
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    x = torch.randn(2, 3, *size)
    # whole-backbone gradients sum over many terms in a different order on
    # each path: 1.6e-5 was seen with 16 threads (H100 host), so 3e-5 here;
    # a formulation error shows as 1e-2 or more
    _compare(fast, plain, x, train, rtol=3e-5, skip=BN_BIASES)


def test_backbone_outputs_are_plain_nchw():
    model = FCViT(arch=MINI).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
        outs_cl = model(torch.randn(1, 3, 64, 64).contiguous(
            memory_format=torch.channels_last))
    for o in outs + outs_cl:
        assert o.is_contiguous()
    with pytest.raises(ValueError, match='4 dims'):
        model(torch.randn(3, 64, 64))


def test_drop_path_same_random_draws():
    """Stochastic depth draws one mask per sample and branch in the same
    order on both paths, so with the same seed they agree."""
    plain = randomize_params(FCViT(arch=MINI, drop_path_rate=0.5,
                             fast_path=False))
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    x = torch.randn(4, 3, 48, 48)
    torch.manual_seed(3)
    out_f, g_f = _run(fast, x, True)
    torch.manual_seed(3)
    out_p, g_p = _run(plain, x, True)
    for a, b in zip(out_f, out_p):
        assert_rel_close(a, b, 1e-5)
    assert_rel_close(g_f['input'], g_p['input'], 1e-5)
    # and the masks really dropped something: another seed differs
    torch.manual_seed(4)
    out_q, _ = _run(plain, x, True)
    assert (out_q[-1] - out_p[-1]).abs().max() > 1e-3


def test_chunked_channel_mixer(monkeypatch):
    """Batch chunks (forced small here) change nothing."""
    monkeypatch.setattr(fcvit_ops, 'CHUNK_BYTES', 1)
    plain = randomize_params(FCViTBlock(32, 4, layer_scale_init_value=1.))
    plain.fast_path = False
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    assert fcvit_ops.chunk_size(torch.zeros(3, 8, 8, 32), 128,
                                kernels='cpu') == 1
    x = torch.randn(3, 32, 8, 8)
    _compare(fast, plain, x, True, rtol=1e-5)
    _compare(fast, plain, x, False, rtol=1e-5)


def test_with_cp_on_fast_path():
    ref = randomize_params(FCViT(arch=MINI))
    cpm = copy.deepcopy(ref)
    for m in cpm.modules():
        if hasattr(m, 'with_cp'):
            m.with_cp = True
    x = torch.randn(2, 3, 64, 96)
    _compare(cpm, ref, x, True, rtol=1e-6, skip=BN_BIASES)


@pytest.mark.parametrize('kernel,hw', [(11, (14, 14)), (11, (7, 7)),
                                       (11, (3, 9)), (7, (10, 6)),
                                       ((5, 3), (6, 11))])
def test_fft_depthwise_weight_grad(kernel, hw):
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    pad = (k[0] // 2, k[1] // 2)
    C = 6
    x = torch.randn(3, C, *hw, dtype=torch.float64)
    w = torch.randn(C, 1, *k, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(3, C, *hw, dtype=torch.float64)
    F.conv2d(x, w, None, 1, pad, 1, C).backward(gy)
    got = fcvit_ops.depthwise_weight_grad_fft(x, gy, k, pad)
    torch.testing.assert_close(got, w.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_depthwise_conv_function_gradients(dtype):
    conv = nn.Conv2d(8, 8, 11, padding=5, groups=8).to(dtype)
    x = torch.randn(2, 8, 9, 12, dtype=dtype).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    y = fcvit_ops.depthwise_conv(x, conv, kernels='cpu')
    assert y.is_contiguous(memory_format=torch.channels_last)
    gy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, conv.weight, conv.bias), gy)
    x2 = x.detach().contiguous().requires_grad_()
    ref = torch.autograd.grad(conv(x2), (x2, conv.weight, conv.bias), gy)
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    assert_rel_close(y, conv(x2), rtol)
    for a, b, n in zip(got, ref, ('input', 'weight', 'bias')):
        assert_rel_close(a, b, rtol, n)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(
            lambda t, w, b: fcvit_ops.DepthwiseConvFFTGrad.apply(
                t, w, b, (2, 1)),
            (torch.randn(1, 2, 4, 5, dtype=dtype, requires_grad=True),
             torch.randn(2, 1, 5, 3, dtype=dtype, requires_grad=True),
             torch.randn(2, dtype=dtype, requires_grad=True)))


@pytest.mark.parametrize('make', [lambda: TokenMixer(32),
                                  lambda: ChannelMixer(32, 4)])
@pytest.mark.parametrize('train', [False, True])
def test_mixers_alone_fast_equals_plain(make, train):
    """Each mixer's own fast forward, outside a block (no folding)."""
    torch.manual_seed(6)
    plain = randomize_params(make()).double()
    plain.fast_path = False
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    x = torch.randn(2, 32, 7, 10, dtype=torch.float64)
    _compare(fast, plain, x, train, rtol=1e-10)


@pytest.mark.parametrize('fast', [False, True])
def test_global_context_either_layout(fast):
    """Both formulations, either memory layout: the same similarity and
    context (the fast one returns channels-last)."""
    torch.manual_seed(5)
    plain = randomize_params(GlobalContext(64)).double()
    plain.fast_path = False
    gc = copy.deepcopy(plain)
    gc.fast_path = fast
    x = torch.randn(2, 64, 6, 9, dtype=torch.float64)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    ref = x + plain(x)
    for inp in (x, x_cl):
        torch.testing.assert_close(gc.similarity(inp), plain.similarity(x))
        torch.testing.assert_close(gc(inp), plain(x))
        out = gc.add_to(inp)
        torch.testing.assert_close(out, ref)
        if fast:
            assert out.is_contiguous(memory_format=torch.channels_last)


def test_plain_path_on_channels_last_input_is_plain(monkeypatch):
    """``fast_path=False`` runs the plain formulation whatever the layout:
    no fast formulation and no fast-path kernel runs on channels-last
    input, and the result is the plain one on NCHW input."""
    model = randomize_params(FCViT(arch=MINI, fast_path=False)).double().eval()

    def refuse(*args, **kwargs):
        raise AssertionError('a fast formulation ran on the plain path')

    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
    for cls, name in ((GlobalContext, '_similarity_fast'),
                      (GlobalContext, '_add_fast'),
                      (TokenMixer, '_forward_fast'),
                      (ChannelMixer, 'forward_fast'),
                      (FCViTBlock, '_forward_fast')):
        monkeypatch.setattr(cls, name, refuse)
    model.to(memory_format=torch.channels_last)
    with torch.no_grad(), fcvit_ops.KernelRecorder() as rec:
        outs = model(x.contiguous(memory_format=torch.channels_last))
    assert rec.calls == []
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a, b)


def test_fast_path_switch_propagates():
    model = FCViT(arch='tiny')
    mixers = [m for m in model.modules()
              if isinstance(m, (FCViTBlock, TokenMixer, ChannelMixer,
                                GlobalContext))]
    assert len(mixers) == 13 * 5  # block, token mixer, 2 GCs, channel mixer
    assert model.fast_path and all(m.fast_path for m in mixers)
    assert {m.kernels for m in mixers} == {'cpu'}
    model.fast_path = False
    assert not any(m.fast_path for m in mixers)
    assert {m.kernels for m in mixers} == {'plain'}
    other = FCViT(arch='tiny', fast_path=False)
    assert not other.stages[0].blocks[0].token_mixer.gc2.fast_path
    # one block switched back: everything inside it, nothing outside
    blk = other.stages[1].blocks[0]
    blk.fast_path = True
    assert blk.token_mixer.gc1.fast_path and blk.channel_mixer.fast_path
    assert blk.token_mixer.gc1.kernels == 'cpu'
    assert not other.stages[0].blocks[0].fast_path and not other.fast_path
    assert other.kernels == other.stages[0].blocks[0].kernels == 'plain'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('train', [False, True])
def test_cuda_fast_equals_plain_and_autocast_runs(train):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    plain = randomize_params(FCViT(arch=MINI, fast_path=False)).cuda()
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    x = torch.randn(2, 3, 64, 80, device='cuda')
    _compare(fast, plain, x, train, rtol=1e-4, skip=BN_BIASES)
    fast.train(train)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        outs = fast(x)
    assert all(torch.isfinite(o).all() for o in outs)


def test_chunked_channel_mixer_partial_last_chunk(monkeypatch):
    """A batch of 3 in chunks of 2: the partial last chunk is computed and
    kept (3 samples, each equal to the plain path's)."""
    plain = randomize_params(FCViTBlock(32, 4, layer_scale_init_value=1.))
    plain.fast_path = False
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    hidden = fast.channel_mixer.fc1.out_channels
    monkeypatch.setattr(fcvit_ops, 'CHUNK_BYTES', 2 * 8 * 8 * hidden * 4)
    assert fcvit_ops.chunk_size(torch.zeros(3, 8, 8, 32), hidden,
                                kernels='cpu') == 2
    x = torch.randn(3, 32, 8, 8)
    with torch.no_grad(), fcvit_ops.KernelRecorder() as rec:
        out = fast(x)
    # the channel mixer's two products ran on 2 samples, then on 1
    rows = [m for m, k, n in rec.gemms if n == hidden or k == hidden]
    assert rows == [2 * 64, 2 * 64, 64, 64]
    assert out.shape == (3, 32, 8, 8)
    _compare(fast, plain, x, True, rtol=1e-5)
    _compare(fast, plain, x, False, rtol=1e-5)


def test_fast_path_auto_follows_the_device(monkeypatch):
    """``'auto'`` (the default) decides the ``'cpu'`` kernels on CPU and
    the plain formulation on a device without tuned kernels (here
    ``meta``); ``True`` there decides the ``'standard'`` kernels (none of
    the CPU ones); bad values are refused by name."""
    model = FCViT(arch=MINI).eval()
    assert model.fast_path == 'auto' and model.kernels == 'cpu'
    assert all(m.fast_path == 'auto' and m.kernels == 'cpu'
               for m in model.modules() if isinstance(m, FCViTBlock))
    with torch.no_grad(), fcvit_ops.KernelRecorder() as rec:
        model(torch.randn(1, 3, 64, 64))
    assert rec.calls
    if fcvit_ops.MKLDNN_AVAILABLE:
        assert all(c.fused for c in rec.calls)

    meta = FCViT(arch=MINI).to('meta').eval()
    assert meta.kernels == 'plain'
    x = torch.empty(3, 3, 64, 64, device='meta')
    with fcvit_ops.KernelRecorder() as rec:
        outs = meta(x)
    assert rec.calls == [] and outs[0].shape == (3, 32, 16, 16)
    # forced: the fast formulation, but no CPU kernel (no fusion, no batch
    # chunks even where a CPU batch would be cut into single samples)
    monkeypatch.setattr(fcvit_ops, 'CHUNK_BYTES', 1)
    meta.fast_path = True
    assert meta.kernels == 'standard'
    with torch.no_grad(), fcvit_ops.KernelRecorder() as rec:
        outs = meta(x)
    assert outs[0].shape == (3, 32, 16, 16)
    assert len(rec.gemms) == 6 * 5 and not any(c.fused for c in rec.calls)
    # every product covers the whole batch of 3 (at strides 4..32)
    assert {m for m, k, n in rec.gemms} == {3 * 16 * 16, 3 * 8 * 8,
                                             3 * 4 * 4, 3 * 2 * 2}

    # the decision table, devices not here included
    decide = fcvit_ops.decide_kernels
    assert decide('auto', 'cpu') == 'cpu'
    assert decide('auto', 'cuda') == 'plain'  # measured: plain is faster
    assert decide('auto', 'mps') == 'plain'
    assert decide(True, 'cuda:1') == 'cuda'
    assert decide(True, 'mps') == 'standard'
    assert decide(False, 'cpu') == decide(False, 'cuda') == 'plain'

    for value in ('Auto', 1, 0, True):
        model.fast_path = value
    assert model.fast_path is True
    for bad in ('fast', 2, None, 0.5):
        with pytest.raises(ValueError, match='fast_path must be'):
            model.fast_path = bad
    with pytest.raises(ValueError, match='fast_path must be'):
        FCViT(arch=MINI, fast_path='cuda')


def _kernels_of(module):
    """The set of ``kernels`` of every FCViT module in ``module``."""
    return {m.kernels for m in module.modules()
            if isinstance(m, FastPathMixin)}


def test_kernels_follow_the_parameters_device():
    """``kernels`` is decided again when the parameters move (``.to()``,
    ``.to_empty()``): the plain formulation on ``meta`` under ``'auto'``,
    the CPU kernels back on CPU, the same set after a dtype change;
    ``fast_path=True`` on ``meta`` gives the standard kernels."""
    model = FCViT(arch=MINI)
    assert _kernels_of(model) == {'cpu'}
    model.to(torch.float64)
    assert _kernels_of(model) == {'cpu'}
    model.to('meta')
    assert _kernels_of(model) == {'plain'}
    model.to_empty(device='cpu')
    assert _kernels_of(model) == {'cpu'}
    model.fast_path = True
    model.to('meta')
    assert _kernels_of(model) == {'standard'}
    # a block moved on its own decides for itself
    blk = FCViTBlock(16, 2).to('meta')
    assert _kernels_of(blk) == {'plain'}


def test_forward_reads_the_decided_kernels(monkeypatch):
    """No forward decides anything: with the decision made unavailable
    after construction, the model still runs, on its decided kernels."""
    model = FCViT(arch=MINI).eval()

    def refuse(*args):
        raise AssertionError('a forward decided the kernels')

    monkeypatch.setattr(fcvit_ops, 'decide_kernels', refuse)
    with torch.no_grad(), fcvit_ops.KernelRecorder() as rec:
        model(torch.randn(1, 3, 64, 64))
    assert rec.calls  # the CPU kernels ran


def test_kernels_set_by_hand():
    """Setting ``kernels`` on a module sets it on every FCViT module inside
    and nothing outside; ``'plain'`` / ``'cpu'`` are ``fast_path`` False /
    True; ``'onnx'`` and ``'standard'`` hold over device moves and
    ``.eval()`` until ``fast_path`` is set, ``'onnx'`` (inference only)
    until ``.train()``; unknown names and another device's kernels are
    refused; :func:`using_kernels` restores every module's state."""
    model = FCViT(arch=MINI)
    blk = model.stages[1].blocks[0]
    blk.kernels = 'plain'
    assert blk.fast_path is False and _kernels_of(blk) == {'plain'}
    assert model.kernels == 'cpu' and model.fast_path == 'auto'
    assert model.stages[0].blocks[0].kernels == 'cpu'

    model.kernels = 'onnx'
    assert _kernels_of(model) == {'onnx'} and model.fast_path == 'auto'
    model.to(torch.float64).eval()
    assert _kernels_of(model) == {'onnx'}
    model.train()
    # each module back to its own fast_path's decision
    assert _kernels_of(model) == {'cpu', 'plain'}
    assert _kernels_of(blk) == {'plain'}

    model.kernels = 'standard'
    model.train()
    model.to(torch.float32)
    assert _kernels_of(model) == {'standard'}
    model.fast_path = 'auto'
    assert _kernels_of(model) == {'cpu'}

    with pytest.raises(ValueError, match='kernels must be one of'):
        model.kernels = 'fast'
    with pytest.raises(ValueError, match='parameters on CUDA'):
        model.kernels = 'cuda'
    model.kernels = 'cpu'
    assert model.fast_path is True and _kernels_of(model) == {'cpu'}

    model.fast_path = 'auto'
    blk.kernels = 'standard'
    with using_kernels(model, 'plain') as same:
        assert same is model and _kernels_of(model) == {'plain'}
    assert model.fast_path == 'auto' and model.kernels == 'cpu'
    assert _kernels_of(blk) == {'standard'}


def test_traced_forward_runs_the_standard_kernels():
    """A module on the ``'cpu'`` kernels, traced (as the TorchScript-based
    ONNX exporter does), records no oneDNN fusion and no in-place GELU in
    the graph, and the graph computes what eager computes."""
    assert fcvit_ops.running_kernels('cpu') == 'cpu'  # eager
    block = randomize_params(
        FCViTBlock(32, 4, layer_scale_init_value=1.)).eval()
    assert block.kernels == 'cpu'
    x = torch.randn(2, 32, 9, 7)
    with torch.no_grad():
        traced = torch.jit.trace(block, x)
        ref = block(x)
        got = traced(x)
    graph = str(traced.inlined_graph)
    assert 'mkldnn' not in graph and 'gelu_' not in graph
    assert 'aten::gelu' in graph
    assert_rel_close(got, ref, 1e-5)


# ---------------------------------------------------------------------- #
# Triton kernels: in Triton's interpreter on CPU, and on CUDA
# ---------------------------------------------------------------------- #
_TRITON_SCRIPT = r'''
import importlib.util, json, sys
import torch
spec = importlib.util.spec_from_file_location('fcvit_triton', sys.argv[1])
k = importlib.util.module_from_spec(spec)
spec.loader.exec_module(k)
k.TILE_ELEMENTS = 128  # several tiles per sample, a partial last one
torch.manual_seed(0)
errors = {}
for dtype in (torch.float32, torch.float64):
    for shape in ((2, 5, 7, 40), (3, 9, 11, 8), (1, 3, 1, 16)):
        C = shape[-1]
        x = (torch.randn(*shape, dtype=dtype) * 2 + 3).requires_grad_()
        w = torch.randn(C, dtype=dtype, requires_grad=True)
        b = torch.randn(C, dtype=dtype, requires_grad=True)
        for affine in (True, False):
            wb = (w, b) if affine else (None, None)
            ins = (x, w, b) if affine else (x, )
            y = k.group_norm1(x, *wb, 1e-5)
            ref = k.group_norm1_reference(x, *wb, 1e-5)
            gn = torch.nn.functional.group_norm(
                x.permute(0, 3, 1, 2), 1, *wb, 1e-5).permute(0, 2, 3, 1)
            gy = torch.randn_like(y)
            got = torch.autograd.grad(y, ins, gy)
            want = torch.autograd.grad(gn, ins, gy)
            rel = lambda a, e: ((a - e).abs().max() / e.abs().max()).item()
            name = f'{str(dtype)[6:]} {shape} affine={affine}'
            errors[name] = dict(
                dtype=str(y.dtype)[6:], kernel_vs_reference=rel(y, ref),
                reference_vs_group_norm=rel(ref, gn),
                grads=[rel(a, e) for a, e in zip(got, want)])
print(json.dumps(errors))
'''


@pytest.mark.slow
def test_triton_group_norm1_in_interpreter():
    """The one-group GroupNorm kernels (forward, input and affine gradients)
    in Triton's interpreter on CPU, against ``F.group_norm`` and the plain
    fallback; float32 and float64, several tiles per sample."""
    pytest.importorskip('triton')
    import json
    import os
    import subprocess
    import sys
    from fcvit_mm.models.backbones import fcvit_triton
    env = dict(os.environ, TRITON_INTERPRET='1')
    res = subprocess.run(
        [sys.executable, '-c', _TRITON_SCRIPT, fcvit_triton.__file__],
        capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    errors = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(errors) == 12
    for name, e in errors.items():
        tol = 1e-12 if name.startswith('float64') else 1e-5
        assert e['dtype'] == name.split()[0]
        assert e['kernel_vs_reference'] <= tol, (name, e)
        assert e['reference_vs_group_norm'] <= tol, (name, e)
        assert len(e['grads']) == (3 if 'True' in name else 1)
        assert max(e['grads']) <= tol, (name, e)


def test_group_norm1_reference_and_checks():
    """The plain fallback: F.group_norm's numbers (float32 statistics for
    half inputs, output in the input's dtype), and clear errors."""
    from fcvit_mm.models.backbones import fcvit_triton as k
    x = torch.randn(2, 4, 5, 16) * 3 + 1
    w, b = torch.randn(16), torch.randn(16)
    ref = F.group_norm(x.permute(0, 3, 1, 2), 1, w, b,
                       1e-5).permute(0, 2, 3, 1)
    assert_rel_close(k.group_norm1_reference(x, w, b, 1e-5), ref, 1e-6)
    half = k.group_norm1_reference(x.bfloat16(), w, b, 1e-5)
    assert half.dtype == torch.bfloat16
    assert_rel_close(half.float(), ref, 1e-2)
    assert not k.kernel_applies(x)
    with pytest.raises(ValueError, match='together'):
        k.group_norm1_reference(x, w, None, 1e-5)
    with pytest.raises(ValueError, match=r'shape \(16,\)'):
        k.group_norm1_reference(x, w[:8], b[:8], 1e-5)
    with pytest.raises(ValueError, match='4 dims'):
        k.group_norm1_reference(x[0], None, None, 1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cuda_triton_group_norm1(dtype):
    from fcvit_mm.models.backbones import fcvit_triton as k
    if not k.HAS_TRITON:
        pytest.skip('Triton is not importable')
    x = (torch.randn(4, 28, 30, 320, device='cuda') * 2 + 3).to(dtype)
    x.requires_grad_()
    w = torch.randn(320, device='cuda', requires_grad=True)
    b = torch.randn(320, device='cuda', requires_grad=True)
    assert k.kernel_applies(x)
    y = k.group_norm1(x, w, b, 1e-5)
    ref = k.group_norm1_reference(x, w, b, 1e-5)
    assert y.dtype == dtype
    gy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w, b), gy)
    want = torch.autograd.grad(ref, (x, w, b), gy)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert_rel_close(y.float(), ref.float(), tol)
    for a, e, n in zip(got, want, ('input', 'weight', 'bias')):
        assert_rel_close(a.float(), e.float(), tol, n)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_auto_path_choice_and_kernels():
    """On CUDA ``'auto'`` takes the plain path, in float32 and under
    autocast; ``fast_path=True`` there runs none of the CPU kernels and
    gives the same outputs as the plain path."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = randomize_params(FCViT(arch=MINI)).cuda().eval()
    x = torch.randn(2, 3, 64, 80, device='cuda')
    with torch.no_grad(), fcvit_ops.KernelRecorder() as rec:
        ref = model(x)
    assert rec.calls == []
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16), \
            fcvit_ops.KernelRecorder() as rec:
        model(x)
    assert rec.calls == []
    model.fast_path = True
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16), \
            fcvit_ops.KernelRecorder() as rec:
        outs = model(x)
    assert rec.calls and not any(c.fused for c in rec.calls)
    for a, b in zip(outs, ref):
        assert_rel_close(a.float(), b, 5e-2)


# --------------------------------------------------------------------------
# bf16 on the CPU (autocast, as --amp trains)
# --------------------------------------------------------------------------
#: bound on the bf16 result's max-abs error relative to float32's largest
#: magnitude, outputs and gradients (bf16 keeps 8 significant bits: about
#: 4e-3 per rounding, a few roundings deep)
BF16_RTOL = 5e-2


def _bf16_run(model, x, train):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs, grads = _run(model, x, train)
    return [o.float() for o in outs], grads


def test_depthwise_conv_function_under_cpu_autocast(monkeypatch):
    """The FFT weight gradient serves bf16 training: the convolution and
    its input gradient in bf16, the weight and bias gradients in float32,
    each within bf16's bound of the float32 result."""
    calls = []
    fft_grad = fcvit_ops.depthwise_weight_grad_fft
    monkeypatch.setattr(fcvit_ops, 'depthwise_weight_grad_fft',
                        lambda *a: calls.append(a[0].dtype) or fft_grad(*a))
    conv = nn.Conv2d(8, 8, 11, padding=5, groups=8)
    x = torch.randn(2, 8, 9, 12).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    gy = torch.randn(2, 8, 9, 12)
    ref = torch.autograd.grad(conv(x), (x, conv.weight, conv.bias), gy)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = fcvit_ops.depthwise_conv(x, conv, kernels='cpu')
    assert y.dtype == torch.bfloat16
    got = torch.autograd.grad(y, (x, conv.weight, conv.bias), gy.bfloat16())
    assert [g.dtype for g in got] == [torch.float32] * 3
    assert calls == [torch.bfloat16]
    for a, b, n in zip(got, ref, ('input', 'weight', 'bias')):
        assert_rel_close(a.float(), b, BF16_RTOL, n)


@pytest.mark.parametrize('fast', [True, False])
@pytest.mark.parametrize('train', [False, True])
def test_backbone_bf16_autocast_close_to_float32(fast, train):
    """Both formulations under CPU bf16 autocast (an odd size, every
    branch weighted): outputs and every gradient within BF16_RTOL of the
    float32 run; the weights' gradients stay float32."""
    model = randomize_params(FCViT(arch=MINI, fast_path=fast))
    x = torch.randn(2, 3, 70, 90)
    out32, g32 = _run(model, x, train)
    model.zero_grad()
    out16, g16 = _bf16_run(model, x, train)
    for i, (a, b) in enumerate(zip(out16, out32)):
        assert_rel_close(a, b, BF16_RTOL, f'output {i}')
    assert sorted(g16) == sorted(g32)
    for n in g32:
        assert g16[n].dtype == torch.float32, n
        if any(s in n for s in BN_BIASES):
            continue
        assert_rel_close(g16[n], g32[n], BF16_RTOL, f'grad {n}')
