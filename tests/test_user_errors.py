"""A user error of a training or test run (a missing data or annotation
file, a config key that does not exist, a missing or mismatched
checkpoint) is told once, in a few lines: the cause and the fix, exit
status 1, no traceback and no torchrun report; with one process
(``tools/train.py`` / ``tools/test.py``) and with two
(``tools/dist_train.sh`` / ``dist_test.sh``, CPU ranks on gloo).
``--debug`` or ``FCVIT_MM_DEBUG=1`` bring the traceback back.

Every run is independent of the others: they start in the background, a
few at a time, when the first test needs one (the ``runs`` fixture), and
each test checks its own."""
import functools
import os
import os.path as osp
import sys

import pytest
import torch

from conftest import ROOT
from helpers import BackgroundRuns, free_port, generated_shapes

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    torch.cuda.is_available(),
    reason='two ranks on gloo: the CPU path runs only without a GPU')]

TOOLS = osp.join(ROOT, 'tools')
MASKRCNN_B12 = osp.join(ROOT, 'configs', 'detection', 'maskrcnn_fcvit_b12.py')
CLS_DEMO = osp.join(ROOT, 'configs', 'classification',
                    'demo_fcvit_tiny_shapes.py')
#: what no run may print for a user error
NOISE = ('Traceback', 'ChildFailedError', 'Root Cause', 'torch.distributed',
         'Sending process', 'Warning', 'warn(')


def tool_command(tool, args, cwd, ranks=1, env=None):
    """``tools/<tool>.py`` (one process) or ``tools/dist_<tool>.sh`` (two
    ranks) run from ``cwd``: (command, cwd, environment)."""
    extra = env or {}
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHON=sys.executable, PORT=str(free_port()))
    env.pop('FCVIT_MM_DEBUG', None)  # the switch under test
    env.update(extra)
    if ranks == 1:
        cmd = [sys.executable, osp.join(TOOLS, f'{tool}.py'), *args]
    elif tool == 'train':
        cmd = ['bash', osp.join(TOOLS, 'dist_train.sh'), args[0], '2',
               *args[1:]]
    else:
        cmd = ['bash', osp.join(TOOLS, 'dist_test.sh'), args[0], args[1],
               '2', *args[2:]]
    return cmd, cwd, env


def _loader_options(imagenet):
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    return [f'{k}.dataset.data_root={imagenet}' for k in loaders] + \
        [f'{k}.{o}' for k in loaders for o in (
            'num_workers=0', 'persistent_workers=False')] + \
        ['train_cfg.max_iters=2', 'train_cfg.val_interval=2']


#: each test's run: ``name: f(params, folder, fixture) -> (tool, args,
#: environment)`` (``params``: the test's parameters, ``folder``: its own
#: folder, ``fixture``: request.getfixturevalue)
COMMANDS = {
    'test_missing_data': lambda p, d, fx: (
        'train', [MASKRCNN_B12, '--work-dir', str(d / 'w')], None),
    'test_missing_data_with_debug_shows_the_traceback': lambda p, d, fx: (
        'train', [MASKRCNN_B12, '--work-dir', str(d / 'w'), '--debug'],
        None),
    'test_debug_environment_variable_shows_the_traceback': lambda p, d, fx: (
        'test', [MASKRCNN_B12, str(d / 'missing.pth')],
        dict(FCVIT_MM_DEBUG='1')),
    'test_config_key_that_does_not_exist': lambda p, d, fx: (
        'train', [MASKRCNN_B12, '--work-dir', str(d / 'w'), '--cfg-options',
                  p['option']], None),
    'test_missing_checkpoint': lambda p, d, fx: (
        'test', [MASKRCNN_B12, str(d / 'missing.pth')], None),
    'test_checkpoint_of_another_model': lambda p, d, fx: (
        'test', [CLS_DEMO, fx('other_variant'), '--work-dir', str(d / 'w'),
                 '--cfg-options', 'test_dataloader.dataset.data_root='
                 f'{fx("imagenet")}', 'test_dataloader.num_workers=0',
                 'test_dataloader.persistent_workers=False'], None),
    'test_entry_points_print_no_deprecation_notice': lambda p, d, fx: (
        'train', [CLS_DEMO, '--work-dir', str(d / 'w'), '--cfg-options',
                  *_loader_options(fx('imagenet'))], None),
}


@pytest.fixture(scope='module')
def runs(request, tmp_path_factory):
    """The runs of this module's selected tests (see COMMANDS), each in
    and from its own folder, started in the background by the first test,
    in test order, a few at a time (helpers.BackgroundRuns): the
    one-process runs leave a core free and every run mostly starts up."""
    background = BackgroundRuns()
    for item in request.session.items:
        if item.module is not request.module:
            continue
        params = getattr(item, 'callspec', None)
        params = params.params if params else {}
        folder = tmp_path_factory.mktemp('run')
        tool, args, env = COMMANDS[item.originalname](
            params, folder, request.getfixturevalue)
        ranks = params.get('ranks', 1)
        # run in its folder (no data/ there: the configs' relative paths)
        background.add(item.nodeid, functools.partial(
            tool_command, tool, args, str(folder), ranks, env),
            weight=ranks, timeout=300)
    yield background
    background.wait_all()  # none left running after the module


def run_tool(runs, request):
    """The test's run (COMMANDS): (exit status, stdout, stderr)."""
    res = runs.result(request.node.nodeid)
    return res.returncode, res.stdout, res.stderr


def assert_short(code, out, err, *expected, max_lines=6):
    """Status 1; stderr holds the message once, in at most ``max_lines``
    lines, with each of ``expected``; nothing of a traceback or of
    torchrun's report anywhere."""
    both = out + err
    assert code == 1, both[-3000:]
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith('error: '), both[-3000:]
    assert len(lines) <= max_lines, err
    assert both.count('error: ') == 1, both[-3000:]
    for text in expected:
        assert text in err, err
    assert 'add --debug, or set FCVIT_MM_DEBUG=1' in err
    for noise in NOISE:
        assert noise not in both, (noise, both[-3000:])


# --------------------------------------------------------------------------
# before the runner: nothing but the message
# --------------------------------------------------------------------------
@pytest.mark.parametrize('ranks', [1, 2])
def test_missing_data(runs, request, ranks):
    """The newcomer's first run: the detection config without COCO (91
    lines before, from two ranks)."""
    code, out, err = run_tool(runs, request)
    assert_short(
        code, out, err,
        "annotation file not found: 'data/coco/annotations/"
        "instances_train2017.json' (set by train_dataloader.dataset."
        "ann_file)",
        "the config reads its data from train_dataloader.dataset.data_root="
        "'data/coco/'",
        '--cfg-options train_dataloader.dataset.data_root=/path/to/data/ '
        'val_dataloader.dataset.data_root=/path/to/data/ '
        'test_dataloader.dataset.data_root=/path/to/data/ '
        'val_evaluator.ann_file=/path/to/data/annotations/'
        'instances_val2017.json')
    assert out.strip() == '', out  # before anything was logged


@pytest.mark.parametrize('ranks', [1, 2])
def test_missing_data_with_debug_shows_the_traceback(runs, request, ranks):
    code, out, err = run_tool(runs, request)
    assert code != 0
    assert 'Traceback' in err and 'DatasetError: annotation file not ' \
        'found' in err, err[-3000:]
    if ranks == 2:  # torchrun's report too
        assert 'ChildFailedError' in err, err[-3000:]


def test_debug_environment_variable_shows_the_traceback(runs, request):
    code, out, err = run_tool(runs, request)
    assert code != 0
    assert 'Traceback' in err and 'FileNotFoundError: checkpoint file ' \
        'not found' in err, err[-3000:]


@pytest.mark.parametrize('ranks', [1, 2])
@pytest.mark.parametrize('option,cause', [
    ('model.backbone.archh=tiny',
     "model.backbone (type=FCViT) takes no 'archh'; did you mean 'arch'?"),
    ('train_dataloader.datset.data_root=/data/coco/',
     "train_dataloader has no key 'datset'; did you mean 'dataset'?"),
])
def test_config_key_that_does_not_exist(runs, request, ranks, option,
                                        cause):
    code, out, err = run_tool(runs, request)
    key = option.split('=')[0]
    assert_short(code, out, err, f'--cfg-options {key}: {cause}',
                 'fix: correct the key')


@pytest.mark.parametrize('ranks', [1, 2])
def test_missing_checkpoint(runs, request, ranks):
    code, out, err = run_tool(runs, request)
    assert_short(code, out, err, 'checkpoint file not found: ',
                 'missing.pth', 'fix: give the path of an existing '
                 'checkpoint')


# --------------------------------------------------------------------------
# in the runner: the run's log, then the message
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    return generated_shapes(tmp_path_factory, 'user_errors_in1k', 'imagenet',
                            num_train=2, num_val=2, img_size=32, seed=0)


@pytest.fixture(scope='module')
def other_variant(tmp_path_factory):
    """A classifier checkpoint of another FCViT than the demo's tiny."""
    from fcvit_mm.models import FCViT
    small = FCViT(arch=dict(layers=[1, 1, 1, 1], embed_dims=[16, 32, 48, 64],
                            mlp_ratios=[2, 2, 2, 2]))
    path = tmp_path_factory.mktemp('user_errors_ckpt') / 'other.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v
                                for k, v in small.state_dict().items()}),
               path)
    return str(path)


@pytest.mark.parametrize('ranks', [1, 2])
def test_checkpoint_of_another_model(runs, request, ranks):
    """(the ``imagenet`` and ``other_variant`` fixtures)"""
    code, out, err = run_tool(runs, request)
    assert_short(code, out, err, 'checkpoint does not fit this FCViT',
                 'another variant?', 'fix: use the checkpoint with the '
                 'config it was trained with', max_lines=10)


# --------------------------------------------------------------------------
# a run that goes well: no third-party deprecation notice either
# --------------------------------------------------------------------------
@pytest.mark.parametrize('ranks', [1, 2])
def test_entry_points_print_no_deprecation_notice(runs, request, ranks):
    """pkg_resources (setuptools on mmengine and mmcv), DDP's
    broadcast_buffers, mmengine's FileClient / HardDiskBackend: the
    libraries' business, not the user's. (Two iterations of the demo
    classifier on the ``imagenet`` fixture's images.)"""
    code, out, err = run_tool(runs, request)
    assert code == 0, (out + err)[-3000:]
    assert 'Iter(val) [1/1]' in out, out[-3000:]  # trained, validated
    both = out + err
    for text in ('is deprecated', 'be deprecated', 'DeprecationWarning',
                 'FutureWarning', 'pkg_resources'):
        assert text not in both, [ln for ln in both.splitlines()
                                  if text in ln]
