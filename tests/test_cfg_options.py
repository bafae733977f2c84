"""``--cfg-options`` checked where configs are loaded
(fcvit_mm/utils/config.py): a key is checked against the class that the
options themselves leave in ``type``, and a list index the config does not
have is a short user error, not a traceback from mmengine's merge. Fast."""
import os.path as osp

import pytest

import fcvit_mm  # noqa: F401
from fcvit_mm.engine import run_tool
from fcvit_mm.utils.config import ConfigKeyError, load_config

from conftest import ROOT
from helpers import load_tool

#: a config whose optimizer is AdamW and which has two LR schedulers
CLS_CONFIG = osp.join(ROOT, 'configs', 'classification',
                      'fcvit_tiny_in1k.py')


def test_option_checked_against_the_type_the_options_set():
    """Switching AdamW to SGD with its momentum in the same options is
    accepted; the momentum alone is not (AdamW takes none)."""
    cfg = load_config(CLS_CONFIG, {
        'optim_wrapper.optimizer.type': 'SGD',
        'optim_wrapper.optimizer.momentum': 0.9})
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.momentum == 0.9
    with pytest.raises(ConfigKeyError,
                       match=r'optim_wrapper\.optimizer \(type=AdamW\) '
                       r"takes no 'momentum'"):
        load_config(CLS_CONFIG, {'optim_wrapper.optimizer.momentum': 0.9})


def test_list_index_the_config_lacks_is_named():
    """``param_scheduler`` has two items: item 1 can be set, item 5 is
    named as missing (before mmengine's merge fails on it)."""
    cfg = load_config(CLS_CONFIG, {'param_scheduler.1.eta_min': 0.0})
    assert cfg.param_scheduler[1].eta_min == 0.0
    with pytest.raises(ConfigKeyError,
                       match=r'--cfg-options param_scheduler\.5\.begin: '
                       r'param_scheduler has 2 items, no item 5'):
        load_config(CLS_CONFIG, {'param_scheduler.5.begin': 0})


def test_list_index_the_config_lacks_is_a_short_message(monkeypatch,
                                                         capsys):
    """``tools/train.py CONFIG --cfg-options param_scheduler.5.begin=0``:
    status 1 and the message with its fix, no traceback."""
    for name in ('FCVIT_MM_DEBUG', 'FCVIT_MM_ERROR_DIR', 'RANK'):
        monkeypatch.delenv(name, raising=False)
    train = load_tool('train')
    with pytest.raises(SystemExit) as e:
        run_tool(lambda: train.main(
            [CLS_CONFIG, '--cfg-options', 'param_scheduler.5.begin=0']))
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith('error: --cfg-options param_scheduler.5.begin: '
                          'param_scheduler has 2 items, no item 5\n'
                          'fix: correct the key'), err
    assert 'Traceback' not in err
