"""A distributed run leaves no process behind:
``tools/dist_train.sh`` with two CPU ranks (gloo) and DataLoader workers,
counting the run's processes once the script has returned, after a run
that ends mid-epoch, after a rank is killed, and after a rank stalls
(SIGSTOP), which must end the job within ``env_cfg.dist_cfg.timeout``."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch

from builders import CLASSES, MASKRCNN_B12, user_config
from conftest import ROOT
from helpers import (free_port, generated_shapes, module_folder, selected,
                     start_process)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    torch.cuda.is_available() or not sys.platform.startswith('linux'),
    reason='the gloo CPU path runs only without a GPU; /proc is Linux')]

MARK = 'FCVIT_MM_TEST_RUN'

#: the module of the runs' test hook (RANK_HOOKS), on their PYTHONPATH
TEST_HOOKS = 'rank_hooks'
RANK_HOOKS = '''
import os, signal
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankOneMisbehaves(Hook):
    """Rank 1 is killed (SIGKILL) or stops (SIGSTOP) after an iteration."""

    def __init__(self, at, sig):
        self.at, self.sig = at, sig

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.rank == 1 and runner.iter + 1 == self.at:
            os.kill(os.getpid(), getattr(signal, self.sig))
'''


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    """160 x 160 images: the masks of the samples a worker has queued
    outgrow a pipe's buffer, so an orphaned worker cannot flush its queue
    and stays (the case DataLoaderWorkersHook is there for)."""
    return generated_shapes(tmp_path_factory, 'dist_coco', 'coco',
                            num_train=16, num_val=2, img_size=160, seed=2)


@pytest.fixture(scope='module')
def hooks_dir(tmp_path_factory):
    return module_folder(tmp_path_factory, TEST_HOOKS, RANK_HOOKS)


def options(root):
    """Mask R-CNN, FCViT-tiny, iteration-based, one DataLoader worker per
    rank with persistent workers (the configs' default)."""
    loader = 'train_dataloader'
    return [
        'model.backbone.arch=tiny', 'model.neck.in_channels=[32,64,160,320]',
        'model.roi_head.bbox_head.num_classes=3',
        'model.roi_head.mask_head.num_classes=3',
        'model.train_cfg.rpn_proposal.max_per_img=100',
        'model.train_cfg.rcnn.sampler.num=32',
        # slim heads (64 channels), as in the demo config
        'model.neck.out_channels=64', 'model.rpn_head.in_channels=64',
        'model.rpn_head.feat_channels=64',
        'model.roi_head.bbox_roi_extractor.out_channels=64',
        'model.roi_head.bbox_head.in_channels=64',
        'model.roi_head.bbox_head.fc_out_channels=128',
        'model.roi_head.mask_roi_extractor.out_channels=64',
        'model.roi_head.mask_head.in_channels=64',
        'model.roi_head.mask_head.conv_out_channels=64',
        'model.roi_head.mask_head.num_convs=1',
        f'{loader}.dataset.data_root={root}',
        f'{loader}.dataset.ann_file=annotations/instances_train2017.json',
        f'{loader}.dataset.data_prefix.img=train2017/',
        f'{loader}.dataset.metainfo.classes=({",".join(CLASSES)})',
        f'{loader}.dataset.pipeline.2.scale=(160,160)',
        f'{loader}.batch_size=1', f'{loader}.num_workers=1',
        f'{loader}.persistent_workers=True',
        'param_scheduler=[]', 'default_hooks.checkpoint.interval=1000',
        'default_hooks.logger.interval=1', 'randomness.seed=0',
    ]


def run_processes(mark, states=None):
    """(pid, command line) of the live processes carrying ``mark`` (those
    in one of ``states`` only, e.g. ``'T'``: stopped, if given)."""
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = f.read()
            with open(f'/proc/{pid}/stat') as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode()[:200]
        except OSError:
            continue
        if f'{MARK}={mark}'.encode() in env and state != 'Z' and \
                (states is None or state in states):
            found.append((int(pid), cmd))
    return found


def start_dist_train(root, hooks_dir, work_dir, max_iters, hooks=(),
                     extra=()):
    """dist_train.sh started in the background: returns the run's mark
    (see :func:`run_processes`), its process and ``finish(timeout)``, which
    waits and returns (exit code, output, seconds, processes left)."""
    mark = uuid.uuid4().hex
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join([hooks_dir, ROOT]),
               PYTHON=sys.executable, PORT=str(free_port()), **{MARK: mark})
    os.makedirs(work_dir, exist_ok=True)
    config = user_config(
        work_dir, MASKRCNN_B12, TEST_HOOKS, hooks,
        "train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', "
        f'max_iters={max_iters})\n')
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '2',
           '--work-dir', work_dir, '--no-validate',
           '--cfg-options', *options(root), *extra]
    start = time.time()
    # output to a file: a process left behind would hold a pipe open
    run = start_process(cmd, osp.join(work_dir, 'output.txt'), cwd=ROOT,
                        env=env)

    def finish(timeout=400):
        res = run(timeout)
        took = time.time() - start
        left = run_processes(mark)
        for _ in range(10):  # a killed process may take a moment to go
            if not left:
                break
            time.sleep(0.5)
            left = run_processes(mark)
        for pid, _ in left:  # do not leave them to the next test
            os.kill(pid, signal.SIGKILL)
        return res.returncode, res.stdout, took, left

    return mark, run.proc, finish


def dist_train(root, hooks_dir, work_dir, max_iters, hooks=(), extra=(),
               timeout=400):
    """Run dist_train.sh; return (exit code, output, seconds, processes
    left)."""
    return start_dist_train(root, hooks_dir, work_dir, max_iters, hooks,
                            extra)[2](timeout)


STALLED = 'test_stalled_rank_ends_within_config_timeout'


@pytest.fixture(scope='module', autouse=True)
def stalled_job(request, tmp_path_factory):
    """The job of :func:`test_stalled_rank_ends_within_config_timeout`
    (last in this module), started before this module's first test: once
    its rank 1 has stopped, the job only waits (the collective timeout,
    then torchrun's 30 s grace before it SIGKILLs the stopped rank), and
    the other tests run in that wait. Nothing else runs while it starts
    (the timeout covers its start-up collectives). ``finish`` of
    :func:`start_dist_train`, or None if that test is not selected."""
    if STALLED not in selected(request):
        yield None
        return
    hook = dict(type='RankOneMisbehaves', at=2, sig='SIGSTOP')
    mark, proc, finish = start_dist_train(
        request.getfixturevalue('coco'), request.getfixturevalue('hooks_dir'),
        str(tmp_path_factory.mktemp('stalled') / 'w'), 6, [hook],
        ['env_cfg.dist_cfg.timeout=20'])
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and \
            not run_processes(mark, states=('T', )):
        time.sleep(0.5)
    yield finish
    if proc.poll() is None:  # its test did not wait for it
        finish(400)


def test_finished_run_mid_epoch_leaves_no_process(coco, hooks_dir, tmp_path):
    """Each rank's DataLoader worker ends with the run (an orphaned one
    would stay for minutes, about 600 MB each here)."""
    code, out, _, left = dist_train(coco, hooks_dir, str(tmp_path / 'w'), 3)
    assert code == 0, out[-4000:]
    assert 'Epoch(train) [1][3/8]' in out  # ended mid-epoch
    assert left == [], left


def test_killed_rank_leaves_no_process(coco, hooks_dir, tmp_path):
    hook = dict(type='RankOneMisbehaves', at=2, sig='SIGKILL')
    code, out, _, left = dist_train(coco, hooks_dir, str(tmp_path / 'w'), 6,
                                    [hook])
    assert code != 0, out[-4000:]
    assert 'Signal 9 (SIGKILL) received' in out
    assert left == [], left


WORKER_SCRIPT = '''
import os, signal, sys
import numpy as np
import torch
if sys.argv[1] == 'hook':
    from fcvit_mm.engine.workers import DataLoaderWorkersHook
    DataLoaderWorkersHook()  # built with the runner, before any loader


class Big(torch.utils.data.Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, i):  # 1 MB, pickled into the worker's pipe
        return np.zeros(1 << 20, np.uint8)


loader = torch.utils.data.DataLoader(Big(), batch_size=None, num_workers=1,
                                     collate_fn=lambda x: x)
it = iter(loader)
next(it)
print(it._workers[0].pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
'''


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


#: the worker's check on its parent: once a second past it, a worker of a
#: killed process that is still there stays
WORKER_GRACE = 7


@pytest.fixture(scope='module')
def killed_loaders(tmp_path_factory):
    """WORKER_SCRIPT for each mode, both started at once (they mostly
    wait): ``mode: (exit code, worker pid, when the process was seen
    dead)``. A worker left at the end is killed."""
    folder = tmp_path_factory.mktemp('loaders')
    script = folder / 'loader.py'
    script.write_text(WORKER_SCRIPT)
    started = {}
    for mode in ('none', 'hook'):
        out = folder / f'{mode}.txt'
        f = open(out, 'w')  # not a pipe: the worker would hold it open
        started[mode] = f, out, subprocess.Popen(
            [sys.executable, str(script), mode], cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT), stdout=f)
    ended = {}
    for mode, (f, out, proc) in started.items():
        try:
            code = proc.wait(120)
        finally:
            f.close()
        ended[mode] = code, int(out.read_text().split()[-1]), time.time()
    yield ended
    for _, worker, _ in ended.values():  # one whose test did not run
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.parametrize('mode', ['none', 'hook'])
def test_dataloader_worker_outliving_its_process(killed_loaders, mode):
    """Without a remedy, the worker of a killed process stays (it cannot
    flush its queue); with DataLoaderWorkersHook built, it is gone. Both
    processes run side by side (module fixture)."""
    code, worker, dead_at = killed_loaders[mode]
    assert code == -signal.SIGKILL
    # past the worker's 5 s check on its parent
    time.sleep(max(0.0, dead_at + WORKER_GRACE - time.time()))
    stays = alive(worker)
    if stays:
        os.kill(worker, signal.SIGKILL)
    assert stays == (mode == 'none')


def test_stalled_rank_ends_within_config_timeout(stalled_job):
    """Rank 1 stops (SIGSTOP) after iteration 2: with
    env_cfg.dist_cfg.timeout=20 the job ends, naming the rank that stopped
    answering, long before torch's default 30 minutes (torchrun adds its
    30 s grace before it SIGKILLs the stopped rank). 20 s, not less: the
    timeout covers every collective, start-up included, on busy cores.
    The job was started before this module's other tests, which ran while
    it waited (the ``stalled_job`` fixture)."""
    code, out, took, left = stalled_job(400)
    assert code != 0, out[-4000:]
    assert left == [], left
    assert 'rank 0: a collective got no answer within ' \
        'env_cfg.dist_cfg.timeout=20 s; stopped answering: rank 1' in out, \
        out[-4000:]
    assert took < 180, took
