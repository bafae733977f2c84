"""Checkpoint loading: reference layouts, our layout, errors, the converter,
and weights-only loading of what mmengine writes."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

import fcvit_mm  # noqa: F401
from fcvit_mm.models import FCViT
from fcvit_mm.models.checkpoint import (CheckpointError,
                                        convert_reference_state_dict,
                                        load_pretrained, safe_load)

from conftest import ROOT
from helpers import load_tool, save_checkpoint_with_code


def _dense_out(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def assert_loads_as_reference(path, golden, **init_cfg):
    """A dense FCViT with ``init_cfg=dict(type='Pretrained',
    checkpoint=path, **init_cfg)`` gives the reference's outputs."""
    model = FCViT(arch=golden['arch'],
                  init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                **init_cfg))
    model.init_weights()
    for out, ref in zip(_dense_out(model, golden['input']),
                        golden['dense']['eval_output'], strict=True):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('wrap,key_prefix', [
    (None, ''), ('state_dict', ''), ('model', ''), ('state_dict', 'module.'),
    ('state_dict', 'backbone.'), ('model', 'module.backbone.'),
])
def test_reference_dense_checkpoint_any_wrapping(tmp_path, golden, wrap,
                                                 key_prefix):
    sd = {key_prefix + k: v for k, v in golden['dense']['state_dict'].items()}
    path = tmp_path / 'ref.pth.tar'
    torch.save({wrap: sd} if wrap else sd, path)
    assert_loads_as_reference(path, golden, prefix='backbone.')


def test_own_layout_with_prefix(tmp_path, golden):
    """A detector checkpoint of this project (backbone.* + other modules)."""
    bb, _ = convert_reference_state_dict(golden['dense']['state_dict'])
    sd = {f'backbone.{k}': v for k, v in bb.items()}
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(4, 4, 1, 1)
    path = tmp_path / 'det.pth'
    torch.save({'state_dict': sd, 'meta': {'epoch': 1}}, path)
    assert_loads_as_reference(path, golden, prefix='backbone.')


@pytest.mark.parametrize('mode', ['dense', 'classification'])
def test_converted_file_loads_without_a_prefix(tmp_path, golden, mode):
    """A reference checkpoint converted by
    tools/model_converters/fcvit_to_mm.py (keys under ``backbone.``) loads
    through ``init_cfg=dict(type='Pretrained', checkpoint=...)`` with no
    ``prefix``, as docs/detection.md says (not an error that asks for the
    converter just run)."""
    convert = load_tool('model_converters/fcvit_to_mm').main
    src, dst = tmp_path / 'ref.pth.tar', tmp_path / 'converted.pth'
    torch.save({'state_dict': golden[mode]['state_dict']}, src)
    convert([str(src), str(dst)])
    if mode == 'dense':
        assert_loads_as_reference(dst, golden)
        return
    # the classifier's file: the backbone's weights, the head left out
    model = FCViT(arch=golden['arch'], out_indices=(3, ),
                  init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    torch.testing.assert_close(model.norm3.weight,
                               golden[mode]['state_dict']['norm.weight'])


def test_missing_and_unexpected_keys_are_logged(tmp_path, golden, caplog):
    # classification weights into a dense model: norm0..2 missing,
    # norm3 (the reference's final norm) present, head ignored
    path = tmp_path / 'cls.pth'
    torch.save({'state_dict': golden['classification']['state_dict']}, path)
    model = FCViT(arch=golden['arch'])

    class ListLogger:
        def __init__(self):
            self.lines = []

        def info(self, msg):
            self.lines.append(msg)

        warning = info

    logger = ListLogger()
    missing, unexpected = load_pretrained(model, str(path), logger=logger)
    assert sorted(missing) == ['norm0.bias', 'norm0.weight', 'norm1.bias',
                               'norm1.weight', 'norm2.bias', 'norm2.weight']
    assert unexpected == []
    text = '\n'.join(logger.lines)
    assert 'missing keys' in text and 'norm0.weight' in text
    # our dense checkpoint into an out_indices=(3,) model: norm0..2 unexpected
    model3 = FCViT(arch=golden['arch'], out_indices=(3, ))
    path2 = tmp_path / 'dense.pth'
    torch.save({'state_dict': golden['dense']['state_dict']}, path2)
    logger2 = ListLogger()
    _, unexpected = load_pretrained(model3, str(path2), logger=logger2)
    assert sorted(unexpected) == ['norm0.bias', 'norm0.weight', 'norm1.bias',
                                  'norm1.weight', 'norm2.bias', 'norm2.weight']
    assert any('unexpected keys' in line and 'norm1.bias' in line
               for line in logger2.lines)


def test_other_variant_is_a_clear_error(tmp_path):
    tiny = FCViT(arch='tiny')
    path = tmp_path / 'tiny.pth'
    torch.save({'state_dict': tiny.state_dict()}, path)
    model = FCViT(arch='b12',
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError) as e:
        model.init_weights()
    msg = str(e.value)
    assert 'patch_embed.proj.weight' in msg
    assert '(32, 3, 7, 7)' in msg and '(64, 3, 7, 7)' in msg


@pytest.mark.parametrize('share,loads', [(0.3, False), (0.45, False),
                                         (0.55, True), (0.8, True)])
def test_fit_check_needs_half_of_the_weights(tmp_path, share, loads):
    """A checkpoint of this FCViT holding fewer than half of its weights is
    refused, naming the converter; from half on it loads (the rest are
    missing keys, a warning)."""
    model = FCViT(arch='tiny')
    own = model.state_dict()
    keep = int(len(own) * share)
    path = tmp_path / 'part.pth'
    torch.save({'state_dict': dict(list(own.items())[:keep])}, path)
    target = FCViT(arch='tiny', init_cfg=dict(type='Pretrained',
                                              checkpoint=str(path)))
    if loads:
        target.init_weights()
        torch.testing.assert_close(target.patch_embed.proj.weight,
                                   model.patch_embed.proj.weight)
    else:
        with pytest.raises(CheckpointError,
                           match=f'holds {keep} of the {len(own)} weights.*'
                           'fcvit_to_mm.py'):
            target.init_weights()


def test_missing_file_names_path(tmp_path):
    path = str(tmp_path / 'nope' / 'fcvit_b12.pth.tar')
    model = FCViT(arch='tiny',
                  init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(FileNotFoundError, match='fcvit_b12.pth.tar'):
        model.init_weights()


def test_corrupt_and_non_checkpoint_files(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': FCViT(arch='tiny').state_dict()}, good)
    data = good.read_bytes()
    trunc = tmp_path / 'trunc.pth'
    trunc.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='trunc.pth'):
        safe_load(str(trunc))
    text = tmp_path / 'notes.txt'
    text.write_text('hello, not a checkpoint')
    with pytest.raises(CheckpointError, match='notes.txt'):
        safe_load(str(text))
    weird = tmp_path / 'list.pth'
    torch.save([1, 2, 3], weird)
    model = FCViT(arch='tiny',
                  init_cfg=dict(type='Pretrained', checkpoint=str(weird)))
    with pytest.raises(CheckpointError, match='not a checkpoint'):
        model.init_weights()


@pytest.mark.slow
def test_converter_round_trip(tmp_path, golden):
    """Reference -> converter -> our layout: same tensors, same outputs, and
    the classification head lands in mmpretrain's ``head.fc``. The first
    conversion runs the script as a command; the others call its ``main``
    in this process (the same code, without a second interpreter start)."""
    script = osp.join(ROOT, 'tools', 'model_converters', 'fcvit_to_mm.py')
    convert = load_tool('model_converters/fcvit_to_mm').main
    for mode in ('classification', 'dense'):
        src = tmp_path / f'{mode}.pth.tar'
        ref_sd = golden[mode]['state_dict']
        torch.save({'state_dict': ref_sd, 'epoch': 300}, src)
        dst = tmp_path / f'{mode}_mm.pth'
        if mode == 'classification':
            subprocess.run([sys.executable, script, str(src), str(dst)],
                           check=True, cwd=ROOT)
        else:
            convert([str(src), str(dst)])
        out = safe_load(str(dst))['state_dict']
        assert len(out) == len(ref_sd)
        assert all(k.startswith(('backbone.', 'head.fc.')) for k in out)
        # every reference tensor is present, bit for bit
        ref_values = sorted(v.sum().item() for v in ref_sd.values())
        assert sorted(v.sum().item() for v in out.values()) == ref_values
        if mode == 'classification':
            torch.testing.assert_close(out['head.fc.weight'],
                                       ref_sd['head.weight'])
            torch.testing.assert_close(out['backbone.norm3.weight'],
                                       ref_sd['norm.weight'])
        if mode == 'dense':
            assert_loads_as_reference(dst, golden, prefix='backbone.')
        else:
            FCViT(arch=golden['arch'], out_indices=(3, ),
                  init_cfg=dict(type='Pretrained', checkpoint=str(dst),
                                prefix='backbone.')).init_weights()
        # converting a file that is already ours is refused: SystemExit
        # with the message (a command's exit status 1, the message on
        # stderr), and nothing written
        with pytest.raises(SystemExit, match='not a reference'):
            convert([str(dst), str(tmp_path / 'again.pth')])
        assert not (tmp_path / 'again.pth').exists()


def test_builds_from_every_registry():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as CLS
    from mmseg.registry import MODELS as SEG
    expected = sum(p.numel() for p in FCViT(arch='tiny',
                                            out_indices=(3, )).parameters())
    for registry in (DET, SEG, CLS):
        model = registry.build(dict(type='FCViT', arch='tiny',
                                    out_indices=(3, )))
        assert type(model) is FCViT and model.out_indices == (3, )
        assert sum(p.numel() for p in model.parameters()) == expected


def test_backbone_module_imports_without_downstream_libraries():
    code = ('import sys\n'
            'import fcvit_mm.models.backbones.fcvit\n'
            'bad = [m for m in ("mmdet", "mmseg", "mmpretrain") '
            'if m in sys.modules]\n'
            'assert not bad, bad\n')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT)


@pytest.mark.slow
def test_mmengine_checkpoint_loads_weights_only(tmp_path):
    """A checkpoint written by an mmengine Runner (HistoryBuffer, numpy in
    the message hub) loads with plain torch.load after importing fcvit_mm,
    the way the libraries' own tools load it."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def forward(self, x, mode='loss'):
            return dict(loss=self.lin(x).square().mean())

    data = [dict(x=torch.randn(2)) for _ in range(8)]
    runner = Runner(
        model=Toy(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=data, batch_size=4,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1)),
        default_scope='mmengine')
    runner.train()
    ckpt = tmp_path / 'epoch_1.pth'
    assert ckpt.exists()
    code = ('import torch, fcvit_mm, sys\n'
            'c = torch.load(sys.argv[1])\n'
            'assert "message_hub" in c and "state_dict" in c\n')
    subprocess.run([sys.executable, '-c', code, str(ckpt)], check=True,
                   cwd=ROOT)
    # and without fcvit_mm, torch's default weights-only load refuses it
    res = subprocess.run(
        [sys.executable, '-c', 'import torch, sys; torch.load(sys.argv[1])',
         str(ckpt)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0 and 'weights_only' in res.stderr


def test_code_in_checkpoint_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    save_checkpoint_with_code(path, marker, state_dict={'w': torch.zeros(1)})
    with pytest.raises(CheckpointError, match='evil.pth'):
        safe_load(str(path))
    assert not marker.exists()


def test_timm_namespace_args_allowed(tmp_path, golden):
    import argparse
    path = tmp_path / 'timm.pth.tar'
    torch.save({'epoch': 299, 'arch': 'fcvit_tiny',
                'state_dict': golden['classification']['state_dict'],
                'args': argparse.Namespace(lr=1e-3, model='fcvit_tiny')},
               path)
    ckpt = safe_load(str(path))
    assert ckpt['args'].lr == 1e-3
