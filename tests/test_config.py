"""Configs as every caller loads them (fcvit_mm/utils/config.py), what the
tools check before a run (fcvit_mm/engine/preflight.py), and the
``fcvit-safe://`` hand-over of a checkpoint already read. Fast."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import fcvit_mm  # noqa: F401
from fcvit_mm.engine.data_checks import DatasetError
from fcvit_mm.engine.preflight import prepare_testing, prepare_training
from fcvit_mm.utils import config as config_utils

from conftest import ROOT

CLS_CONFIG = osp.join(ROOT, 'configs', 'classification',
                      'fcvit_tiny_in1k.py')


# --------------------------------------------------------------------------
# one loader for the run tools, deploy and the analysis tools
# --------------------------------------------------------------------------
def test_every_caller_uses_the_one_loader():
    from fcvit_mm import engine
    from fcvit_mm.deploy import export, parts, runtime
    from tools.analysis.lib import models
    # one name each, in fcvit_mm.utils.config (not re-exported)
    assert not hasattr(engine, 'load_config')
    assert not hasattr(engine, 'task_of')
    assert export.load_task_config is runtime.load_task_config \
        is config_utils.load_task_config
    assert export.build_model is config_utils.build_model
    assert export.model_task is parts.model_task is config_utils.model_task
    assert not hasattr(models, 'load_task_config')


def test_config_helpers_go_by_their_own_names():
    """No module of fcvit_mm.deploy, nor a deployment tool, holds a config
    helper under another name (``load_config`` / ``task_of`` are
    fcvit_mm.engine's functions of another signature)."""
    import glob
    import importlib
    import re
    helpers = [config_utils.load_task_config, config_utils.model_task,
               config_utils.load_config, config_utils.library_of,
               config_utils.build_model]
    files = sorted(glob.glob(osp.join(ROOT, 'fcvit_mm', 'deploy', '*.py')))
    for path in files:
        name = osp.splitext(osp.basename(path))[0]
        module = importlib.import_module(f'fcvit_mm.deploy.{name}')
        for attr, value in vars(module).items():
            for helper in helpers:
                if value is helper:
                    assert attr == helper.__name__, (name, attr)
    files += glob.glob(osp.join(ROOT, 'tools', 'deployment', '*.py'))
    for path in files:
        with open(path) as f:
            text = f.read()
        assert not re.search(r'\bas (load_config|task_of)\b', text), path
        assert not re.search(r'\bdeploy\.export import [^\n]*'
                             r'\b(load_config|task_of)\b', text), path


def test_load_config_file_package_path_and_config(tmp_path, capsys):
    from mmengine.logging import MMLogger
    path = tmp_path / 'cfg.py'
    path.write_text("default_scope = 'mmpretrain'\noptim_wraper = None\n"
                    "a = dict(b=1)\n")
    # a current logger of this test's own, writing to the captured stdout
    # (one made by an earlier test writes to that test's closed capture)
    MMLogger.get_instance(f'test_load_config_{id(capsys)}')
    cfg = config_utils.load_config(str(path), {'a.b': 2})
    assert cfg.a.b == 2
    assert "unknown top-level key 'optim_wraper'" in capsys.readouterr().out
    copied = config_utils.load_config(cfg)
    assert copied is not cfg and copied.a.b == 2
    with pytest.raises(FileNotFoundError, match='nope.py'):
        config_utils.load_config(str(tmp_path / 'nope.py'))
    with pytest.raises(FileNotFoundError, match="package 'no_such_pkg'"):
        config_utils.load_config('no_such_pkg::x.py')


def test_library_of_config_and_task_of_model():
    for scope in config_utils.TASK_LIBRARIES:
        assert config_utils.library_of(Config(dict(default_scope=scope))) \
            == scope
    with pytest.raises(ValueError, match="default_scope='mmengine'"):
        config_utils.library_of(Config(dict(default_scope='mmengine')))
    with pytest.raises(NotImplementedError, match='Linear.*supported are'):
        config_utils.model_task(torch.nn.Linear(1, 1))


def test_build_model_as_inference_builds_it():
    cfg, scope = config_utils.load_task_config(CLS_CONFIG)
    assert scope == 'mmpretrain'
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint='nowhere.pth')
    model = config_utils.build_model(cfg)
    assert not model.training and model.cfg is cfg
    assert config_utils.model_task(model) == 'classification'
    assert model.backbone.init_cfg is None  # no pretrained weights
    assert cfg.model.backbone.init_cfg is not None  # the config unchanged


# --------------------------------------------------------------------------
# preflight: the annotation files a run reads
# --------------------------------------------------------------------------
def _run_cfg(tmp_path, val_cfg, test=True):
    (tmp_path / 'train.txt').write_text('a.jpg 0\n')
    loader = dict(dataset=dict(type='CustomDataset',
                               data_root=str(tmp_path)))
    cfg = dict(default_scope='mmpretrain',
               train_dataloader=dict(loader, dataset=dict(
                   loader['dataset'], ann_file='train.txt')),
               val_dataloader=dict(loader, dataset=dict(
                   loader['dataset'], ann_file='missing_val.txt')),
               val_cfg=val_cfg)
    if test:
        cfg['test_dataloader'] = dict(loader, dataset=dict(
            loader['dataset'], ann_file='missing_test.txt'))
    return Config(cfg)


@pytest.mark.parametrize('val_cfg', [dict(), dict(type='ValLoop')])
def test_training_checks_the_validation_annotation_file(tmp_path, val_cfg):
    """``val_cfg = dict()`` (the classification schedule's) validates too,
    so its annotation file is checked before the run."""
    with pytest.raises(DatasetError, match='missing_val.txt.*'
                       r'val_dataloader\.dataset\.ann_file'):
        prepare_training(_run_cfg(tmp_path, val_cfg))


def test_training_without_validation_skips_its_file(tmp_path):
    prepare_training(_run_cfg(tmp_path, None))
    with pytest.raises(DatasetError, match='missing_test.txt'):
        prepare_testing(_run_cfg(tmp_path, None))


# --------------------------------------------------------------------------
# fcvit-safe://: a checkpoint read once is handed over once
# --------------------------------------------------------------------------
def test_handed_over_checkpoint_is_taken_once(tmp_path):
    """The copy handed to :func:`safe_url` serves the next load only; the
    load after it reads the file again (no stale copy kept in memory)."""
    from mmengine.runner import CheckpointLoader

    from fcvit_mm.models import checkpoint
    path = str(tmp_path / 'epoch_1.pth')
    torch.save({'state_dict': {'w': torch.zeros(2)}}, path)
    held = {'state_dict': {'w': torch.ones(2)}}  # what the caller read
    url = checkpoint.safe_url(path, held)
    assert CheckpointLoader.load_checkpoint(url) is held
    torch.save({'state_dict': {'w': torch.full((2, ), 3.0)}}, path)
    again = CheckpointLoader.load_checkpoint(url)
    assert again is not held
    torch.testing.assert_close(again['state_dict']['w'],
                               torch.full((2, ), 3.0))
    assert checkpoint.safe_url(path) == url  # nothing handed over now
    assert CheckpointLoader.load_checkpoint(url) is not held


def test_cfg_option_at_the_top_level_near_miss_named_new_key_taken():
    """A ``--cfg-options`` key the config lacks at the top level: a near
    miss of a key the runner reads is named with the key meant; a new key
    (nothing close) is taken."""
    from fcvit_mm.utils.config import ConfigKeyError, check_cfg_options
    cfg = Config(dict(default_scope='mmpretrain',
                      train_cfg=dict(by_epoch=True, max_epochs=1)))
    with pytest.raises(ConfigKeyError,
                       match=r"--cfg-options randomnes\.seed: the config "
                       r"has no key 'randomnes'; did you mean "
                       r"'randomness'\?"):
        check_cfg_options(cfg, {'randomnes.seed': 1})
    check_cfg_options(cfg, {'my_experiment_tag': 'a'})  # new: no error
