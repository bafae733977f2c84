"""Either OpenMMLab stack: the original packages (``make install``) and their
maintained continuation, the onedl-* packages (``make install
STACK=onedl``), which install the same modules under other distribution
names. What fcvit_mm does for the onedl stack (:mod:`fcvit_mm.internals`)
is checked here on whichever stack runs the suite: where it can, a test
puts the original stack in the onedl stack's situation. CI runs the suite
on both stacks, where the resume and checkpoint tests of the other files
meet the real onedl-mmengine."""
import os.path as osp
import pickle
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.config import utils as config_utils

import fcvit_mm  # noqa: F401
from fcvit_mm.engine.determinism import RandomStateHook
from fcvit_mm.internals import register_config_scopes
from fcvit_mm.models.checkpoint import CheckpointError, safe_load

from conftest import ROOT
from helpers import save_checkpoint_with_code

SEG_CONFIGS = ('configs/segmentation/fpn_fcvit_b12_ade20k.py',
               'configs/segmentation/upernet_fcvit_b12_ade20k.py')


def test_mmseg_scope_found_by_its_module(monkeypatch, tmp_path):
    """mmengine finds ``mmseg::`` through the distribution name
    ``mmsegmentation``; under another name (onedl-mmsegmentation) the scope
    is pointed at the installed module, and a bare ``mmseg::`` base loads."""
    monkeypatch.setitem(config_utils.MODULE2PACKAGE, 'mmseg',
                        'mmsegmentation-under-another-name')
    user = tmp_path / 'user.py'
    user.write_text("_base_ = 'mmseg::_base_/models/fpn_r50.py'\n")
    with pytest.raises(ModuleNotFoundError, match='not installed'):
        Config.fromfile(str(user))
    register_config_scopes()
    assert config_utils.MODULE2PACKAGE['mmseg'] == 'mmseg'
    assert Config.fromfile(str(user)).model.decode_head.type == 'FPNHead'


@pytest.mark.slow
def test_our_mmseg_configs_load_before_fcvit_mm_is_imported():
    """mmseg's own tools parse our configs before any ``custom_imports``:
    with mmseg installed under another distribution name, and fcvit_mm not
    yet imported, our segmentation configs load (``_base_/scopes.py``)."""
    code = textwrap.dedent(f'''
        import sys
        from mmengine.config import Config
        from mmengine.config import utils
        utils.MODULE2PACKAGE['mmseg'] = 'mmsegmentation-under-another-name'
        assert 'fcvit_mm' not in sys.modules
        for path in {SEG_CONFIGS!r}:
            cfg = Config.fromfile(path)
            assert cfg.model.backbone.type == 'FCViT', path
            assert 'fcvit_mm' not in cfg  # the import binds no config key
        print('loaded', len({SEG_CONFIGS!r}))
    ''')
    res = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'loaded 2' in res.stdout


def test_every_mmseg_base_lists_the_scopes_file_first():
    """A user config may inherit any one of our bases: each that names
    ``mmseg::`` lists ``scopes.py`` before it."""
    import glob
    found = 0
    for path in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                          recursive=True):
        text = open(path).read()
        if "'mmseg::" not in text:
            continue
        found += 1
        assert 'scopes.py' in text, path
        assert text.index('scopes.py') < text.index("'mmseg::"), path
    assert found >= 5


def test_mmengine_loader_keeps_allowlist_and_runs_no_code(tmp_path):
    """A checkpoint loaded by mmengine's loader (a plain path, as
    ``load_from`` and the libraries' tools give it) leaves the weights-only
    allowlist whole for the next load, and a checkpoint holding code is
    refused by it without running the code (onedl-mmengine's own loader
    would load it again with ``weights_only=False``)."""
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader
    good = tmp_path / 'iter_4.pth'
    torch.save({'state_dict': {'w': torch.ones(2)},
                'message_hub': {'log_scalars': {
                    'loss': HistoryBuffer([1.0, 0.5], [1, 1])}}}, good)
    for _ in range(2):
        ckpt = CheckpointLoader.load_checkpoint(str(good), 'cpu')
        assert ckpt['message_hub']['log_scalars']['loss'].mean() == 0.75
    assert safe_load(str(good))['state_dict']['w'].sum() == 2
    # torch's own default load, after mmengine's
    assert torch.load(good)['state_dict']['w'].sum() == 2

    marker = tmp_path / 'ran'
    evil = tmp_path / 'evil.pth'
    save_checkpoint_with_code(evil, marker, state_dict={})
    with pytest.raises((CheckpointError, pickle.UnpicklingError)):
        CheckpointLoader.load_checkpoint(str(evil), 'cpu')
    assert not marker.exists()


def test_resume_loads_batches_a_fast_forwarding_loop_would_skip():
    """onedl-mmengine's iteration-based loop (``fast_forward_on_resume``)
    would move its sampler past the trained batches without loading them:
    the hook loads them through the loop's iterator, then tells the loop
    they are consumed. mmengine 0.10.7's loop, which has no such flag,
    loads them itself and is left alone."""
    logged = []
    logger = SimpleNamespace(info=logged.append)
    loop = SimpleNamespace(iter=3, fast_forward_on_resume=False,
                           dataloader_iterator=iter(range(10)))
    RandomStateHook._load_consumed_batches(
        SimpleNamespace(train_loop=loop, logger=logger))
    assert next(loop.dataloader_iterator) == 3
    assert loop.fast_forward_on_resume is True
    assert 'loading the 3 batches' in logged[0]

    original = SimpleNamespace(iter=3, dataloader_iterator=iter(range(10)))
    RandomStateHook._load_consumed_batches(
        SimpleNamespace(train_loop=original, logger=logger))
    assert next(original.dataloader_iterator) == 0
