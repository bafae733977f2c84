"""tools/train.py, tools/test.py and the launcher scripts: argument handling,
library dispatch, and the command lines the scripts build (fast; the real
runs are in tests/test_detection.py)."""
import os
import os.path as osp
import stat
import subprocess

import pytest
from builders import MASKRCNN_B12, TOOLS
from helpers import load_tool
from mmengine.config import Config


train_tool = load_tool('train')
test_tool = load_tool('test')


def write_config(tmp_path, text, name='cfg.py'):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def minimal_cfg(**kwargs):
    base = dict(
        default_scope='mmdet',
        optim_wrapper=dict(type='OptimWrapper',
                           optimizer=dict(type='SGD', lr=0.1)),
        auto_scale_lr=dict(enable=False, base_batch_size=16),
        train_dataloader=dict(batch_size=2, num_workers=2,
                              persistent_workers=True, pin_memory=True),
        val_dataloader=dict(batch_size=1),
        val_cfg=dict(type='ValLoop'),
        val_evaluator=dict(type='CocoMetric'),
        default_hooks=dict(visualization=dict(type='DetVisualizationHook')),
        visualizer=dict(type='DetLocalVisualizer', name='visualizer'))
    base.update(kwargs)
    return Config(base)


# --------------------------------------------------------------------------
# bad input: clear errors
# --------------------------------------------------------------------------
def test_missing_config(tmp_path):
    missing = str(tmp_path / 'nope.py')
    with pytest.raises(FileNotFoundError, match='nope.py'):
        train_tool.main([missing])
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    with pytest.raises(FileNotFoundError, match='nope.py'):
        test_tool.main([missing, str(ckpt)])


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        test_tool.main([MASKRCNN_B12, str(tmp_path / 'missing.pth')])


@pytest.mark.parametrize('scope', [None, 'mmocr'])
def test_unknown_library(tmp_path, scope):
    line = '' if scope is None else f'default_scope = {scope!r}\n'
    path = write_config(tmp_path, line + 'model = dict(type="X")\n')
    with pytest.raises(ValueError, match='default_scope'):
        train_tool.main([path])


def test_dispatch_on_default_scope(tmp_path):
    from fcvit_mm.utils.config import TASK_LIBRARIES, library_of
    for scope in ('mmdet', 'mmseg', 'mmpretrain'):
        assert library_of(Config(dict(default_scope=scope))) == scope
        assert scope in TASK_LIBRARIES
    assert library_of(Config.fromfile(MASKRCNN_B12)) == 'mmdet'


def test_auto_scale_lr_needs_setting():
    args = train_tool.parse_args(['x.py', '--auto-scale-lr'])
    cfg = minimal_cfg()
    cfg._cfg_dict.pop('auto_scale_lr')
    with pytest.raises(RuntimeError, match='auto_scale_lr'):
        train_tool.merge_args(cfg, args)
    cfg = train_tool.merge_args(minimal_cfg(), args)
    assert cfg.auto_scale_lr.enable is True


def test_amp_flag():
    args = train_tool.parse_args(['x.py', '--amp'])
    cfg = train_tool.merge_args(minimal_cfg(), args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    other = minimal_cfg(optim_wrapper=dict(type='MyWrapper'))
    with pytest.raises(ValueError, match='MyWrapper'):
        train_tool.merge_args(other, args)


# --------------------------------------------------------------------------
# flags applied to the config
# --------------------------------------------------------------------------
def test_train_flags():
    cfg = train_tool.merge_args(
        minimal_cfg(), train_tool.parse_args(['configs/a/my_cfg.py']))
    assert cfg.work_dir == osp.join('./work_dirs', 'my_cfg')
    assert cfg.launcher == 'none'
    assert not cfg.get('resume')

    cfg = train_tool.merge_args(
        minimal_cfg(),
        train_tool.parse_args(['a.py', '--work-dir', 'w', '--resume']))
    assert (cfg.work_dir, cfg.resume, cfg.load_from) == ('w', True, None)

    cfg = train_tool.merge_args(
        minimal_cfg(),
        train_tool.parse_args([
            'a.py', '--resume', 'c.pth', '--no-validate', '--no-pin-memory',
            '--no-persistent-workers'
        ]))
    assert (cfg.resume, cfg.load_from) == (True, 'c.pth')
    assert cfg.val_cfg is None and cfg.val_dataloader is None
    assert cfg.train_dataloader.pin_memory is False
    assert cfg.train_dataloader.persistent_workers is False


def test_cfg_options_reach_the_config(tmp_path):
    """``--cfg-options`` are merged into the loaded config (nested keys and
    tuples), as the libraries' tools do."""
    from fcvit_mm.utils.config import load_config
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("model = dict(backbone=dict(arch='b12', depth=1))\n"
                        "train_dataloader = dict(batch_size=2)\n")
    args = train_tool.parse_args([
        str(cfg_file), '--cfg-options', 'model.backbone.arch=tiny',
        'train_dataloader.batch_size=8', 'x.scale=(64,32)'
    ])
    cfg = load_config(args.config, args.cfg_options)
    assert cfg.model.backbone == dict(arch='tiny', depth=1)
    assert cfg.train_dataloader.batch_size == 8
    assert cfg.x.scale == (64, 32)


def test_show_dir_sets_visualization_hook():
    args = test_tool.parse_args(['a.py', 'c.pth', '--show-dir', 'vis'])
    cfg = test_tool.trigger_visualization_hook(minimal_cfg(), args)
    hook = cfg.default_hooks.visualization
    assert hook.draw is True and hook.test_out_dir == 'vis'
    seg = minimal_cfg(default_scope='mmseg',
                      default_hooks=dict(visualization=dict(
                          type='SegVisualizationHook')))
    seg = test_tool.trigger_visualization_hook(seg, args)
    assert seg.visualizer.save_dir == 'vis'
    no_hook = minimal_cfg(default_hooks=dict())
    with pytest.raises(RuntimeError, match='visualization'):
        test_tool.trigger_visualization_hook(no_hook, args)


def test_fresh_visualizer_name():
    from mmengine.visualization import Visualizer

    from fcvit_mm.engine import fresh_visualizer_name
    name = 'fcvit_test_vis'
    cfg = Config(dict(visualizer=dict(type='Visualizer', name=name)))
    fresh_visualizer_name(cfg)
    assert cfg.visualizer.name == name  # not taken yet: unchanged
    Visualizer.get_instance(name)
    fresh_visualizer_name(cfg)
    assert cfg.visualizer.name == name + '_1'
    Visualizer.get_instance(name + '_1')
    cfg.visualizer.name = name
    fresh_visualizer_name(cfg)
    assert cfg.visualizer.name == name + '_2'


def test_cpu_distributed_wrapper_settings(monkeypatch):
    """On CPU, the launcher's process group is gloo and DDP gets
    device_ids=None (the process group itself is faked here)."""
    import torch
    import torch.distributed as dist

    from fcvit_mm.engine import init_cpu_distributed
    if torch.cuda.is_available():
        pytest.skip('the CPU path is taken only without a GPU')
    started = []
    monkeypatch.setattr(dist, 'is_initialized', lambda: bool(started))
    monkeypatch.setattr(dist, 'init_process_group',
                        lambda **kw: started.append(kw))
    cfg = minimal_cfg(env_cfg=dict(dist_cfg=dict(backend='nccl')))
    assert init_cpu_distributed(cfg, 'pytorch') is True
    assert started == [dict(backend='gloo')]
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model_wrapper_cfg.find_unused_parameters is False
    assert init_cpu_distributed(minimal_cfg(), 'none') is False
    with pytest.raises(ValueError, match='mpi'):
        init_cpu_distributed(minimal_cfg(), 'mpi')


# --------------------------------------------------------------------------
# launcher scripts: the command lines they build
# --------------------------------------------------------------------------
def fake_program(tmp_path, name):
    """An executable that prints its arguments, one per line."""
    path = tmp_path / name
    path.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def run_script(script, args, env):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ('NNODES', 'NODE_RANK', 'PORT', 'MASTER_ADDR',
                             'GPUS', 'GPUS_PER_NODE')}
    full_env.update(env)
    out = subprocess.run(['bash', osp.join(TOOLS, script), *args],
                         env=full_env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, check=True)
    return out.stdout.splitlines()


def test_dist_train_command(tmp_path):
    python = fake_program(tmp_path, 'python')
    argv = run_script('dist_train.sh', ['cfg.py', '4', '--amp'],
                      dict(PYTHON=python, NNODES='2', NODE_RANK='1',
                           PORT='1234', MASTER_ADDR='10.1.2.3'))
    assert argv[0] == osp.join(TOOLS, 'dist_launch.py')  # torchrun's args
    for flag in ('--nnodes=2', '--node_rank=1', '--master_addr=10.1.2.3',
                 '--nproc_per_node=4', '--master_port=1234'):
        assert flag in argv
    assert argv[-5:] == [osp.join(TOOLS, 'train.py'), 'cfg.py', '--launcher',
                         'pytorch', '--amp']
    # defaults: one node, port 29500, localhost
    argv = run_script('dist_train.sh', ['cfg.py', '2'], dict(PYTHON=python))
    for flag in ('--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
                 '--nproc_per_node=2', '--master_port=29500'):
        assert flag in argv


def test_dist_test_command(tmp_path):
    python = fake_program(tmp_path, 'python')
    argv = run_script('dist_test.sh',
                      ['cfg.py', 'c.pth', '2', '--out', 'r.pkl'],
                      dict(PYTHON=python, PORT='4321'))
    assert '--master_port=4321' in argv and '--nproc_per_node=2' in argv
    assert argv[-7:] == [osp.join(TOOLS, 'test.py'), 'cfg.py', 'c.pth',
                         '--launcher', 'pytorch', '--out', 'r.pkl']


@pytest.mark.parametrize('script,args,tail', [
    ('slurm_train.sh', ['part', 'job', 'cfg.py', 'wd', '--amp'],
     ['train.py', 'cfg.py', '--work-dir=wd', '--launcher=slurm', '--amp']),
    ('slurm_test.sh', ['part', 'job', 'cfg.py', 'c.pth'],
     ['test.py', 'cfg.py', 'c.pth', '--launcher=slurm']),
])
def test_slurm_commands(tmp_path, script, args, tail):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    fake_program(bindir, 'srun')
    argv = run_script(script, args, dict(
        PATH=f'{bindir}:{os.environ["PATH"]}', GPUS='16', GPUS_PER_NODE='8',
        PYTHON='py', SRUN_ARGS='--mem=8G  --time=1:00:00'))
    assert argv[:2] == ['-p', 'part']
    # SRUN_ARGS: split into separate srun options, before the program
    assert argv.index('--mem=8G') + 1 == argv.index('--time=1:00:00') \
        < argv.index('py')
    assert '--job-name=job' in argv and '--ntasks=16' in argv
    assert '--gres=gpu:8' in argv and '--ntasks-per-node=8' in argv
    i = argv.index('py')
    assert argv[i + 1] == '-u'
    assert [osp.basename(argv[i + 2])] + argv[i + 3:] == tail


def test_shutdown_distributed_destroys_the_group(tmp_path):
    import torch.distributed as dist

    from fcvit_mm.engine import shutdown_distributed
    assert shutdown_distributed() is False  # nothing to do without a group
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store',
                            rank=0, world_size=1)
    assert dist.is_initialized()
    assert shutdown_distributed() is True
    assert not dist.is_initialized()
