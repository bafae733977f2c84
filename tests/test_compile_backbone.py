"""``torch.compile(backbone, fullgraph=True)``: one graph (a graph break
fails the compile), on both paths, train and eval, with the outputs and the
gradients of every parameter and of the input that eager gives.

The backend is ``aot_eager`` (dynamo's capture, where graph breaks happen,
and AOTAutograd's joint forward-backward graph, run by eager kernels):
inductor's C++ code generation takes minutes per case on a small CPU.
``FCVIT_TEST_COMPILE_BACKEND=inductor`` runs the same tests through it.
"""
import copy
import os

import pytest
import torch

import fcvit_mm  # noqa: F401
from fcvit_mm.models import FCViT
# one_thread: an autouse fixture for this module
from helpers import one_thread  # noqa: F401
from helpers import (BN_BIASES, TINY_ARCH, assert_rel_close,
                     randomize_params)

BACKEND = os.environ.get('FCVIT_TEST_COMPILE_BACKEND', 'aot_eager')


def _step(fn, module, x, train):
    """Outputs of ``fn(x)`` and the gradients of ``module``'s parameters
    and of ``x`` for a loss that weighs every position differently."""
    module.train(train)
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    outs = fn(x)
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() +
               o.square().sum() for o in outs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()
             if p.grad is not None}
    grads['input'] = x.grad.clone()
    return [o.detach() for o in outs], grads


@pytest.mark.slow
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('fast_path', ['auto', False],
                         ids=['default', 'plain'])
def test_compile_fullgraph_matches_eager(fast_path, train):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = randomize_params(FCViT(arch=TINY_ARCH, fast_path=fast_path))
    module = copy.deepcopy(eager)
    compiled = torch.compile(module, fullgraph=True, backend=BACKEND)
    x = torch.randn(2, 3, 37, 45)
    out_c, g_c = _step(compiled, module, x, train)
    out_e, g_e = _step(eager, eager, x, train)
    assert len(out_c) == len(out_e) == 4
    for i, (a, b) in enumerate(zip(out_c, out_e)):
        assert_rel_close(a, b, 1e-5, f'output {i}')
    assert sorted(g_c) == sorted(g_e)
    for n in g_e:
        if train and any(s in n for s in BN_BIASES):
            continue  # zero in exact arithmetic: rounding noise on both
        assert_rel_close(g_c[n], g_e[n], 3e-5, f'grad {n}')
    if train:  # the BatchNorm statistics moved the same way
        for (n, a), b in zip(module.named_buffers(), eager.buffers()):
            assert_rel_close(a.float(), b.float(), 1e-5, n)
