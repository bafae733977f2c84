"""The backbone works for any input size from 32 x 32 up (property-based),
and says clearly when an input is smaller than that."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fcvit_mm  # noqa: F401
from fcvit_mm.models import FCViT

ARCH = dict(layers=[1, 1, 1, 1], embed_dims=[16, 16, 16, 16],
            mlp_ratios=[2, 2, 2, 2])


def _out_size(n):
    n = (n + 2 * 3 - 7) // 4 + 1
    sizes = [n]
    for _ in range(3):
        n = (n - 1) // 2 + 1
        sizes.append(n)
    return sizes


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return FCViT(arch=ARCH).eval()


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(h=st.integers(32, 300), w=st.integers(32, 300))
def test_any_size_from_32(model, h, w):
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    for out, eh, ew in zip(outs, _out_size(h), _out_size(w)):
        assert out.shape == (1, 16, eh, ew)
        assert torch.isfinite(out).all()


@settings(max_examples=10, deadline=None)
@given(h=st.integers(1, 31), w=st.integers(1, 400))
def test_below_minimum_is_a_clear_error(model, h, w):
    with pytest.raises(ValueError, match=r'at least 32 x 32.*got'):
        model(torch.randn(1, 3, h, w))
    with pytest.raises(ValueError, match=r'at least 32 x 32'):
        model(torch.randn(1, 3, w, h))


def test_wrong_channel_count_is_a_clear_error(model):
    with pytest.raises(ValueError, match='3 channels'):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match='B, C, H, W'):
        model(torch.randn(3, 64, 64))
