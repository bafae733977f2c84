"""Which errors of a run are the user's and what their messages say, in
this process (the tools' runs: test_user_errors.py): a user error ends the
run with status 1 and the cause and fix, naming the data of the run's own
config; any other error, a ``KeyError`` of a bug included, keeps its
traceback. Fast."""
import pytest
from mmengine.config import Config

import fcvit_mm  # noqa: F401
from fcvit_mm.engine import config_for_errors, run_tool
from fcvit_mm.engine.user_errors import user_error


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """A run of one process whose messages come to stderr."""
    for name in ('FCVIT_MM_DEBUG', 'FCVIT_MM_ERROR_DIR', 'RANK'):
        monkeypatch.delenv(name, raising=False)


def coco_config(root):
    return Config(dict(
        train_dataloader=dict(dataset=dict(data_root=root)),
        val_evaluator=dict(ann_file=f'{root}annotations/val.json')))


def raising(exc, cfg=None):
    """A tool's ``main`` that fails with ``exc`` (inside
    ``config_for_errors(cfg)`` when given)."""
    def main():
        if cfg is None:
            raise exc
        with config_for_errors(cfg):
            raise exc
    return main


def test_key_error_of_a_bug_keeps_its_traceback():
    """``KeyError('num_classes')`` is a bug, not a config ``type`` that no
    registry has: it is raised on, not reported as a user error."""
    exc = KeyError('num_classes')
    assert user_error(exc) is None
    with pytest.raises(KeyError, match='num_classes'):
        run_tool(raising(exc))


def test_type_no_registry_has_is_a_user_error(capsys):
    with pytest.raises(SystemExit) as e:
        run_tool(raising(KeyError(
            'FCVit is not in the mmdet::model registry.')))
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith('error: FCVit is not in the mmdet::model '
                          'registry.\nfix: correct the "type"'), err


def test_missing_data_file_names_the_data_of_the_run(capsys):
    """The fix names the data root of the config the error came from,
    with nothing but that config given (no earlier step has to record
    it); two runs in one process each name their own."""
    for root in ('data/coco/', 'data/other/'):
        with pytest.raises(SystemExit) as e:
            run_tool(raising(FileNotFoundError(f'{root}train/1.jpg'),
                             coco_config(root)))
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith(f'error: file not found: {root}train/1.jpg\n'
                              'fix: the config reads its data from '
                              f"train_dataloader.dataset.data_root='{root}'")
        assert 'val_evaluator.ann_file=/path/to/data/annotations/val.json' \
            in err, err
    message = user_error(FileNotFoundError('x.jpg'), coco_config('d/'))
    assert "data_root='d/'" in message
    assert user_error(FileNotFoundError('x.jpg')).endswith(
        'fix: check the path in the config or on the command line')
