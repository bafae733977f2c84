"""The FCViT backbone: exactness against the reference, options, errors."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn

import fcvit_mm  # noqa: F401
from fcvit_mm.models import FCViT
from fcvit_mm.models.backbones.fcvit import GlobalContext

# exact counts of the reference implementation's models (the paper gives
# them rounded, in units of 2 ** 20: 4.6M, 14M, 25.7M, 49.1M)
CLS_PARAMS = dict(tiny=4_784_752, b12=14_701_832, b24=26_960_232,
                  b48=51_477_032)
DENSE_PARAMS = dict(tiny=4_464_264, b12=14_189_856, b24=26_448_256,
                    b48=50_965_056)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('arch', sorted(CLS_PARAMS))
def test_parameter_counts(arch):
    dense = FCViT(arch=arch)
    assert n_params(dense) == DENSE_PARAMS[arch]
    cls = FCViT(arch=arch, out_indices=(3, ))
    head = nn.Linear(cls.embed_dims[-1], 1000)
    assert n_params(cls) + n_params(head) == CLS_PARAMS[arch]


def _save_reference(tmp_path, golden, mode, wrap='state_dict'):
    sd = golden[mode]['state_dict']
    path = tmp_path / f'ref_{mode}_{wrap}.pth.tar'
    torch.save({wrap: sd} if wrap else dict(sd), path)
    return str(path)


def _original_golden():
    """The first golden file (7.0 MB, tests/data/README.md), where CI has
    the shared folder beside the clone; None elsewhere."""
    from conftest import ROOT
    path = osp.join(ROOT, '..', 'shared', 'reference',
                    'fcvit_mini_golden.pth')
    return torch.load(path, weights_only=True) if osp.isfile(path) else None


def test_golden_file_is_small_and_says_where_it_is_from(golden):
    from conftest import DATA
    assert osp.getsize(osp.join(DATA, 'fcvit_mini_golden.pth')) <= 2**20
    assert 'github.com/ma-xu/FCViT' in golden['reference']


@pytest.mark.parametrize('train_mode', [False, True])
def test_original_golden_file_where_present(tmp_path, train_mode):
    """The same checks on the first golden file, which the reference commit
    of the current one reproduces (skipped in a clone alone)."""
    original = _original_golden()
    if original is None:
        pytest.skip('no ../shared/reference/fcvit_mini_golden.pth')
    test_golden_dense_through_init_cfg(tmp_path, original, train_mode)
    test_golden_classification(tmp_path, original, train_mode)


@pytest.mark.parametrize('train_mode', [False, True])
def test_golden_dense_through_init_cfg(tmp_path, golden, train_mode):
    ckpt = _save_reference(tmp_path, golden, 'dense')
    model = FCViT(arch=golden['arch'],
                  init_cfg=dict(type='Pretrained', checkpoint=ckpt))
    model.init_weights()
    model.train(train_mode)
    with torch.no_grad():
        outs = model(golden['input'])
    ref = golden['dense']['train_output' if train_mode else 'eval_output']
    assert len(outs) == len(ref) == 4
    for out, r in zip(outs, ref):
        assert out.shape == r.shape
        torch.testing.assert_close(out, r, atol=1e-5, rtol=0)


@pytest.mark.parametrize('train_mode', [False, True])
def test_golden_classification(tmp_path, golden, train_mode):
    """Reference classification weights: backbone via init_cfg (its final
    norm becomes norm3), plus the linear head on the pooled features."""
    ckpt = _save_reference(tmp_path, golden, 'classification', wrap='model')
    model = FCViT(arch=golden['arch'], out_indices=(3, ),
                  init_cfg=dict(type='Pretrained', checkpoint=ckpt,
                                prefix='backbone.'))
    model.init_weights()
    sd = golden['classification']['state_dict']
    head = nn.Linear(sd['head.weight'].shape[1], golden['num_classes'])
    head.load_state_dict({'weight': sd['head.weight'],
                          'bias': sd['head.bias']})
    model.train(train_mode)
    with torch.no_grad():
        logits = head(model(golden['input'])[0].mean(dim=(2, 3)))
    ref = golden['classification'][
        'train_output' if train_mode else 'eval_output']
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)


def test_golden_detects_biased_std(golden, tmp_path, monkeypatch):
    """The tolerance is tight enough to see a biased std (a real bug)."""
    ckpt = _save_reference(tmp_path, golden, 'dense')
    model = FCViT(arch=golden['arch'],
                  init_cfg=dict(type='Pretrained', checkpoint=ckpt)).eval()
    model.init_weights()

    def biased(self, x, g):
        B, C, H, W = x.shape
        xh = x.reshape(B, self.heads, self.head_dim, H * W)
        gh = g.reshape(B, self.heads, 1, self.head_dim)
        s = torch.matmul(gh, xh).view(B, -1) * self.scale
        s = (s - s.mean(1, keepdim=True)) / (
            s.std(1, keepdim=True, unbiased=False) + self.eps)
        s = s.view(B, self.heads, H * W)
        return (s * self.rescale_weight.view(1, -1, 1) +
                self.rescale_bias.view(1, -1, 1))

    monkeypatch.setattr(GlobalContext, '_similarity', biased)
    with torch.no_grad():
        outs = model(golden['input'])
    err = max((o - r).abs().max().item()
              for o, r in zip(outs, golden['dense']['eval_output'],
                              strict=True))
    assert err > 1e-5


def test_global_context_matches_spec_formula():
    """GC against a literal, loop-free transcription of the spec's steps."""
    torch.manual_seed(0)
    gc = GlobalContext(32)
    nn.init.normal_(gc.rescale_weight)
    nn.init.normal_(gc.rescale_bias)
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
    gc = gc.double()
    B, C, H, W = x.shape
    c = C // 8
    g = x.mean(dim=(2, 3))
    s = torch.stack([
        (x[:, h * c:(h + 1) * c] * g[:, h * c:(h + 1) * c, None, None]).sum(1)
        for h in range(8)
    ], 1) * c**-0.5  # B, 8, H, W
    flat = s.reshape(B, -1)
    mean = flat.mean(1)[:, None, None, None]
    std = flat.std(1, unbiased=True)[:, None, None, None]
    s = (s - mean) / (std + 1e-5)
    s = s * gc.rescale_weight[None, :, None, None] + \
        gc.rescale_bias[None, :, None, None]
    u = gc.fc1(g)
    u = torch.maximum(u[:, :C // 8], u[:, C // 8:])
    v = gc.fc2(u)  # B, C
    expected = torch.cat(
        [s[:, h:h + 1] * v[:, h * c:(h + 1) * c, None, None]
         for h in range(8)], 1)
    torch.testing.assert_close(gc(x), expected)
    torch.testing.assert_close(gc.similarity(x), s)


@pytest.mark.parametrize('size', [(97, 131), (32, 32), (224, 224), (65, 40)])
def test_output_shapes_odd_sizes(size):
    model = FCViT(arch='tiny').eval()
    H, W = size
    with torch.no_grad():
        outs = model(torch.randn(1, 3, H, W))
    h, w = (H + 6 - 7) // 4 + 1, (W + 6 - 7) // 4 + 1
    assert len(outs) == 4  # the default out_indices: every stage
    for i, out in enumerate(outs):
        assert out.shape == (1, model.embed_dims[i], h, w)
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1


@pytest.mark.slow
def test_out_indices_subset_and_negative():
    model = FCViT(arch='tiny', out_indices=(-1, 1))
    assert model.out_indices == (1, 3)
    assert hasattr(model, 'norm1') and hasattr(model, 'norm3')
    assert not hasattr(model, 'norm0') and not hasattr(model, 'norm2')
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 320]
    # every parameter that exists takes part in the loss (DDP-safe)
    model2 = FCViT(arch='tiny', out_indices=(1, 2, 3))
    sum(o.sum() for o in model2(torch.randn(1, 3, 64, 64))).backward()
    unused = [n for n, p in model2.named_parameters() if p.grad is None]
    assert unused == []


@pytest.mark.parametrize('bad', [4, -5, (0, 7), (), 'a', (1, 1)])
def test_bad_out_indices(bad):
    with pytest.raises(ValueError, match='out_indices'):
        FCViT(arch='tiny', out_indices=bad)


@pytest.mark.parametrize('name', ['B12', 'Tiny'])
def test_arch_names_in_any_case(name):
    """``arch='B12'`` (as a config may spell it) builds b12."""
    model = FCViT(arch=name)
    want = FCViT.arch_settings[name.lower()]
    assert model.embed_dims == want['embed_dims']
    assert model.layers == want['layers']
    assert model.mlp_ratios == want['mlp_ratios']
    assert model.stages[3].blocks[0].norm1.num_channels == \
        want['embed_dims'][3]


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError) as e:
        FCViT(arch='b36')
    for name in ('tiny', 'b12', 'b24', 'b48'):
        assert name in str(e.value)


@pytest.mark.parametrize('arch,exc,match', [
    (dict(layers=[1, 1, 1, 1], embed_dims=[32, 64, 96, 128]), KeyError,
     'mlp_ratios'),
    (dict(layers=[1, 1, 1], embed_dims=[32, 64, 96],
          mlp_ratios=[4, 4, 4]), ValueError, 'layers'),
    (dict(layers=[1, 1, 1, 1], embed_dims=[30, 64, 96, 128],
          mlp_ratios=[4, 4, 4, 4]), ValueError, 'divisible'),
    (dict(layers=[1, 1, 1, 1], embed_dims=[32, 64, 96, 128],
          mlp_ratios=[4, 4, 4, 4], depth=3), KeyError, 'depth'),
    (dict(layers=[1, 0, 1, 1], embed_dims=[32, 64, 96, 128],
          mlp_ratios=[4, 4, 4, 4]), ValueError, 'positive'),
])
def test_malformed_arch_dict(arch, exc, match):
    with pytest.raises(exc, match=match):
        FCViT(arch=arch)


def test_custom_arch_dict():
    arch = dict(layers=[1, 1, 2, 1], embed_dims=[32, 64, 96, 128],
                mlp_ratios=[8, 8, 4, 4])
    model = FCViT(arch=arch)
    assert [len(s.blocks) for s in model.stages] == [1, 1, 2, 1]
    assert model.stages[2].blocks[0].channel_mixer.fc1.out_channels == 384


def test_frozen_stages():
    model = FCViT(arch='tiny', frozen_stages=2, out_indices=(0, 1, 2, 3))
    model.train()
    frozen = [model.patch_embed, model.stages[0], model.stages[1],
              model.norm0, model.norm1]
    for m in frozen:
        assert all(not p.requires_grad for p in m.parameters())
        assert all(not sub.training for sub in m.modules())
    for m in (model.stages[2], model.stages[3], model.norm2):
        assert all(p.requires_grad for p in m.parameters())
        assert m.training
    # frozen BN statistics do not move in training
    before = model.patch_embed.norm.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(model.patch_embed.norm.running_mean, before)
    # 0 freezes the stem only
    m0 = FCViT(arch='tiny', frozen_stages=0).train()
    assert not any(p.requires_grad for p in m0.patch_embed.parameters())
    assert all(p.requires_grad for p in m0.stages[0].parameters())
    assert m0.stages[0].training
    with pytest.raises(ValueError, match='frozen_stages'):
        FCViT(arch='tiny', frozen_stages=5)


def test_norm_eval():
    model = FCViT(arch='tiny', norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 4
    assert all(not bn.training for bn in bns)
    assert model.stages[0].blocks[0].training
    before = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(2, 3, 64, 64))
    for bn, b in zip(bns, before):
        torch.testing.assert_close(bn.running_mean, b)
    model2 = FCViT(arch='tiny', norm_eval=False).train()
    assert all(m.training for m in model2.modules()
               if isinstance(m, nn.BatchNorm2d))


@pytest.mark.slow
def test_with_cp_same_outputs_and_gradients():
    # one block per stage (every block runs the same checkpointed code)
    torch.manual_seed(0)
    ref = FCViT(arch=dict(layers=[1, 1, 1, 1], embed_dims=[16, 32, 48, 64],
                          mlp_ratios=[2, 2, 2, 2]), drop_path_rate=0.)
    ref.init_weights()
    cpm = copy.deepcopy(ref)
    for m in cpm.modules():
        if hasattr(m, 'with_cp'):
            m.with_cp = True
    x = torch.randn(2, 3, 64, 96)
    outs = [ref(x), cpm(x)]
    assert len(outs[0]) == 4
    for o1, o2 in zip(*outs, strict=True):
        torch.testing.assert_close(o1, o2)
    sum(o.square().sum() for o in outs[0]).backward()
    sum(o.square().sum() for o in outs[1]).backward()
    for (n, p1), p2 in zip(ref.named_parameters(), cpm.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=n)
    assert FCViT(arch='tiny', with_cp=True).stages[0].blocks[0].with_cp


def test_drop_path_schedule():
    model = FCViT(arch='b12', drop_path_rate=0.1)
    blocks = [b for s in model.stages for b in s.blocks]
    n = len(blocks)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for b in blocks]
    expected = [0.1 * k / (n - 1) for k in range(n)]
    assert rates == pytest.approx(expected)
    assert isinstance(blocks[0].drop_path, nn.Identity)


def test_layer_scale_init_and_from_scratch_init():
    model = FCViT(arch='tiny', layer_scale_init_value=1e-5)
    model.init_weights()
    blk = model.stages[1].blocks[0]
    assert torch.all(blk.layer_scale_1 == 1e-5)
    assert torch.all(FCViT(arch='tiny').stages[0].blocks[0].layer_scale_2
                     == 1e-6)
    dw = blk.token_mixer.dw1
    fan_out = 11 * 11 * dw.out_channels // dw.groups
    assert abs(dw.weight.std().item() - (2 / fan_out)**0.5) < 0.02
    assert torch.all(dw.bias == 0)
    fc = model.stages[3].blocks[0].token_mixer.gc1.fc1
    assert abs(fc.weight.std().item() - 0.02) < 0.003
    assert torch.all(fc.bias == 0)


def test_get_layer_depth():
    model = FCViT(arch='b12')
    total = sum(model.layers)
    assert model.get_layer_depth('backbone.patch_embed.proj.weight',
                                 'backbone.') == (0, total + 2)
    assert model.get_layer_depth(
        'backbone.stages.0.blocks.0.norm1.weight', 'backbone.')[0] == 1
    assert model.get_layer_depth(
        'backbone.stages.2.blocks.3.norm1.weight',
        'backbone.')[0] == 2 + 2 + 3 + 1
    assert model.get_layer_depth(
        'backbone.stages.1.downsample.proj.weight', 'backbone.')[0] == 3
    assert model.get_layer_depth('backbone.norm3.weight',
                                 'backbone.')[0] == total + 1
    assert model.get_layer_depth('head.fc.weight',
                                 'backbone.')[0] == total + 1


def test_pretrained_none_starts_from_scratch():
    model = FCViT(arch='tiny',
                  init_cfg=dict(type='Pretrained', checkpoint=None))
    model.init_weights()  # no error: from-scratch init
    dw = model.stages[0].blocks[0].token_mixer.dw1
    assert torch.all(dw.bias == 0) and dw.weight.std() > 0
