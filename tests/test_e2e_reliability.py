"""Reliability of real runs: SIGKILL + --resume gives the uninterrupted
result, a dying distributed worker ends the job, seeds differ per rank,
and bad data gets errors that name the file."""
import json
import os
import os.path as osp
import shutil
import signal
import sys

import cv2
import numpy as np
import pytest
import torch

from builders import (MASKRCNN_B12, OUR_HOOKS, RETINANET_B12, TOOLS,
                      checkpoint_weights, load_cfg, maskrcnn_options,
                      retinanet_options, small_classifier_config, user_config)
from conftest import ROOT
from helpers import (free_port, generated_shapes, module_folder,
                     save_checkpoint_with_code, selected, start_process,
                     stop_unfinished)

#: each test trains or runs a tool (make test-fast leaves them out)
pytestmark = pytest.mark.slow

TINY = ['model.backbone.arch=tiny', 'model.neck.in_channels=[32,64,160,320]']
#: the module of the runs' test hooks (HOOKS_MODULE), on their PYTHONPATH
TEST_HOOKS = 'rel_hooks'
HOOKS_MODULE = '''
import json, os, signal
import numpy as np
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterCheckpoint(Hook):
    """SIGKILL itself right after the checkpoint of an epoch / iteration."""
    priority = 'LOWEST'

    def __init__(self, epoch=None, iteration=None):
        self.epoch, self.iteration = epoch, iteration

    def after_train_epoch(self, runner):
        if self.epoch is not None and runner.epoch + 1 == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if self.iteration is not None and runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class RecordSeedAndCrash(Hook):
    """Write this rank's seed and a random draw; rank 1 then dies."""

    def __init__(self, crash_iter=None):
        self.crash_iter = crash_iter

    def before_train(self, runner):
        rank = runner.rank
        with open(os.path.join(runner.work_dir, f'rank{rank}.json'),
                  'w') as f:
            json.dump(dict(seed=runner.seed, draw=float(np.random.rand())), f)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.rank == 1 and self.crash_iter is not None \\
                and runner.iter + 1 == self.crash_iter:
            os._exit(3)
'''


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return generated_shapes(tmp_path_factory, 'rel_coco', 'coco', num_train=4,
                            num_val=2, img_size=64, seed=1)


@pytest.fixture(scope='module')
def hooks_dir(tmp_path_factory):
    return module_folder(tmp_path_factory, TEST_HOOKS, HOOKS_MODULE)


def train(config, work_dir, options, hooks_dir, extra=(), timeout=600,
          launcher=None, tool=None):
    """A training run (``tools/train.py``, ``dist_train.sh`` with
    ``launcher``, or another ``tool``); its CompletedProcess."""
    return start_train(config, work_dir, options, hooks_dir, extra,
                       launcher, tool)(timeout)


def resume_beside(full_run, config, work_dir, options, hooks_dir):
    """The interrupted run in ``work_dir`` resumed (``--resume``) while the
    uninterrupted ``full_run`` (:func:`start_train`'s) is still going; both
    must end well. Returns the resumed run's CompletedProcess."""
    resumed_run = start_train(config, work_dir, options, hooks_dir,
                              ['--no-validate', '--resume'])
    full_res = full_run()
    assert full_res.returncode == 0, full_res.stdout[-4000:]
    res = resumed_run()
    assert res.returncode == 0, res.stdout[-4000:]
    return res


def assert_same_weights(full_path, resumed_path):
    """The two checkpoints hold the same tensors, bit for bit."""
    full = checkpoint_weights(full_path)
    resumed = checkpoint_weights(resumed_path)
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def start_train(config, work_dir, options, hooks_dir, extra=(),
                launcher=None, tool=None):
    """:func:`train` started in the background (runs that do not depend on
    each other go side by side, one thread each, on the two cores): call
    the result, with a timeout, for the CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join([hooks_dir, ROOT]),
               PYTHON=sys.executable)
    if launcher is None:
        cmd = [sys.executable, tool or osp.join(TOOLS, 'train.py'), config]
    else:
        env['PORT'] = str(free_port())
        cmd = ['bash', osp.join(TOOLS, 'dist_train.sh'), config, '2']
    cmd += ['--work-dir', work_dir, *extra]
    if options:
        cmd += ['--cfg-options', *options]
    # the output to a file beside the work dir
    return start_process(cmd, work_dir.rstrip('/') + '_output.txt',
                         cwd=ROOT, env=env)


def test_detection_sigkill_then_resume_equals_uninterrupted(
        coco, hooks_dir, tmp_path):
    """Mask R-CNN, epoch-based: killed (SIGKILL) right after the epoch-2
    checkpoint, resumed with --resume: the final weights equal those of a
    run that was never interrupted, bit for bit."""
    opts = maskrcnn_options(coco) + TINY + [
        'train_cfg.max_epochs=3', 'train_dataloader.num_workers=1',
        'train_dataloader.persistent_workers=False']
    full_cfg = user_config(str(tmp_path), MASKRCNN_B12, TEST_HOOKS)
    full_run = start_train(full_cfg, str(tmp_path / 'full'), opts, hooks_dir,
                           ['--no-validate'])

    kill_dir = tmp_path / 'killed'
    kill_dir.mkdir()
    kill_cfg = user_config(str(kill_dir), MASKRCNN_B12, TEST_HOOKS,
                           [dict(type='KillAfterCheckpoint', epoch=2)])
    work = str(tmp_path / 'interrupted')
    res = train(kill_cfg, work, opts, hooks_dir, ['--no-validate'])
    assert res.returncode == -signal.SIGKILL, res.stdout[-4000:]
    assert osp.exists(osp.join(work, 'epoch_2.pth'))
    assert not osp.exists(osp.join(work, 'epoch_3.pth'))

    res = resume_beside(full_run, full_cfg, work, opts, hooks_dir)
    assert 'resumed epoch: 2' in res.stdout
    assert_same_weights(str(tmp_path / 'full' / 'epoch_3.pth'),
                        osp.join(work, 'epoch_3.pth'))


def test_mmdet_own_train_amp_sigkill_then_resume_equals_uninterrupted(
        coco, hooks_dir, tmp_path, monkeypatch):
    """The guarantees come with the config, not with our tool, and hold in
    CPU mixed precision: through mmdet's own tools/train.py (as its wheel
    ships it) with its ``--amp`` (bf16 autocast on the CPU), a RetinaNet
    config inheriting ours with ``seed=None`` (as shipped) is killed
    (SIGKILL) after the epoch-2 checkpoint, and ``--resume`` ends with the
    weights of a run that was never interrupted (with the seed the
    interrupted run drew)."""
    import mmdet
    monkeypatch.setenv('FCVIT_MM_CPU_BF16', '1')  # bf16 on any CPU
    tool = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    opts = retinanet_options(coco) + [
        'model.backbone.arch=tiny', 'model.neck.in_channels=[64,160,320]',
        'train_cfg.max_epochs=3', 'train_dataloader.num_workers=1',
        'train_dataloader.persistent_workers=False',
        'train_cfg.val_interval=9', 'randomness.seed=None']
    kill_dir = tmp_path / 'killed'
    kill_dir.mkdir()
    kill_cfg = user_config(str(kill_dir), RETINANET_B12, TEST_HOOKS,
                           [dict(type='KillAfterCheckpoint', epoch=2)])
    work = str(tmp_path / 'interrupted')
    res = train(kill_cfg, work, opts, hooks_dir, ['--amp'], tool=tool)
    assert res.returncode == -signal.SIGKILL, res.stdout[-4000:]
    assert 'RandomStateHook' in res.stdout  # declared by the config
    assert 'bf16 autocast with float32 weights' in res.stdout
    seed = state_dict_meta(osp.join(work, 'epoch_2.pth'))['seed']

    cfg = user_config(str(tmp_path), RETINANET_B12, TEST_HOOKS)
    full_opts = opts[:-1] + [f'randomness.seed={seed}']
    full_run = start_train(cfg, str(tmp_path / 'full'), full_opts, hooks_dir,
                           ['--amp'], tool=tool)
    res = train(cfg, work, opts, hooks_dir, ['--amp', '--resume'], tool=tool)
    assert res.returncode == 0, res.stdout[-4000:]
    assert 'resumed epoch: 2' in res.stdout
    res = full_run()
    assert res.returncode == 0, res.stdout[-4000:]
    assert_same_weights(str(tmp_path / 'full' / 'epoch_3.pth'),
                        osp.join(work, 'epoch_3.pth'))


def state_dict_meta(path):
    from fcvit_mm.models.checkpoint import safe_load
    return safe_load(path)['meta']


def test_resume_with_corrupt_latest_checkpoint_falls_back(
        coco, hooks_dir, tmp_path):
    opts = maskrcnn_options(coco) + TINY + ['train_cfg.max_epochs=2']
    cfg = user_config(str(tmp_path), MASKRCNN_B12, TEST_HOOKS)
    work = str(tmp_path / 'work')
    res = train(cfg, work, opts, hooks_dir, ['--no-validate'])
    assert res.returncode == 0, res.stdout[-4000:]
    last = osp.join(work, 'epoch_2.pth')
    with open(last, 'r+b') as f:
        f.truncate(os.path.getsize(last) // 2)
    # the two resumes side by side, the first on a copy of the work dir
    # (the second writes epoch_2.pth again)
    named = str(tmp_path / 'named')
    shutil.copytree(work, named)
    named_run = start_train(cfg, named, opts, hooks_dir,
                            ['--resume', osp.join(named, 'epoch_2.pth')])
    # plain --resume falls back to the newest checkpoint that loads
    res = train(cfg, work, opts, hooks_dir, ['--no-validate', '--resume'])
    # --resume PATH naming the corrupt file is a clear error
    named_res = named_run()
    assert named_res.returncode != 0
    assert 'epoch_2.pth' in named_res.stdout and \
        'corrupt' in named_res.stdout
    assert res.returncode == 0, res.stdout[-4000:]
    assert 'cannot resume from' in res.stdout and 'epoch_2.pth' in res.stdout
    assert 'resumed epoch: 1' in res.stdout
    assert checkpoint_weights(last)  # epoch 2 trained again and saved whole


@pytest.fixture(scope='module')
def failing_runs(request, coco, hooks_dir, tmp_path_factory):
    """The runs that must stop at once with a message naming the problem,
    started together by the first test that needs one (each is one process
    on one thread: the two cores run two side by side); each test waits for
    its own. ``name: (folder, finish)`` for the selected tests."""
    tests = selected(request)
    runs = {}

    def start(name, opts, extra, data=None):
        folder = tmp_path_factory.mktemp(name)
        cfg = user_config(str(folder), MASKRCNN_B12, TEST_HOOKS)
        runs[name] = folder, start_train(
            cfg, str(folder / 'w'), maskrcnn_options(data or coco) + opts,
            hooks_dir, extra)
        return folder

    if 'test_resume_refuses_checkpoint_with_code' in tests:
        folder = tmp_path_factory.mktemp('evil')
        save_checkpoint_with_code(folder / 'evil.pth', folder / 'ran',
                                  state_dict={}, meta={})
        start('code', TINY, ['--resume', str(folder / 'evil.pth')])
        runs['code'] = folder, runs['code'][1]
    if 'test_malformed_annotation_file_is_named' in tests:
        for name in ('bad_json', 'no_ann'):
            root = str(tmp_path_factory.mktemp(name + '_data') / 'coco')
            shutil.copytree(coco, root)
            ann = osp.join(root, 'annotations', 'instances_train2017.json')
            if name == 'bad_json':
                with open(ann, 'w') as f:
                    f.write('{"images": [{"id": 1,')
            else:
                os.remove(ann)
            start(name, TINY, ['--no-validate'], data=root)
    if 'test_nan_loss_stops_training_naming_the_iteration' in tests:
        start('nan', TINY + ['optim_wrapper.optimizer.lr=1e30'],
              ['--no-validate'])
    yield runs
    stop_unfinished(finish for _, finish in runs.values())


def test_resume_refuses_checkpoint_with_code(failing_runs):
    folder, finish = failing_runs['code']
    res = finish()
    assert res.returncode != 0
    assert 'refusing to load' in res.stdout and 'evil.pth' in res.stdout
    assert not (folder / 'ran').exists()


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='the gloo CPU path runs only without a GPU')
def test_dead_worker_ends_distributed_job(coco, hooks_dir, tmp_path):
    """Rank 1 dies at iteration 2 of a 2-process job: the job exits
    non-zero, well within the timeout, and ranks had different seeds."""
    opts = maskrcnn_options(coco, batch_size=1) + TINY + [
        'train_cfg.max_epochs=2', 'randomness.seed=5']
    cfg = user_config(str(tmp_path), MASKRCNN_B12, TEST_HOOKS,
                      [dict(type='RecordSeedAndCrash', crash_iter=2)])
    work = str(tmp_path / 'work')
    res = train(cfg, work, opts, hooks_dir, ['--no-validate'],
                launcher='pytorch', timeout=300)
    assert res.returncode != 0, res.stdout[-4000:]
    seeds = [json.load(open(osp.join(work, f'rank{r}.json')))
             for r in (0, 1)]
    # randomness.diff_rank_seed: seed + rank, so augmentation differs
    assert seeds[0]['seed'] == 5 and seeds[1]['seed'] == 6
    assert seeds[0]['draw'] != seeds[1]['draw']


# --------------------------------------------------------------------------
# bad data
# --------------------------------------------------------------------------
def build_train_dataset(coco):
    from mmengine.registry import init_default_scope

    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    cfg = load_cfg(MASKRCNN_B12, maskrcnn_options(coco))
    return DATASETS.build(cfg.train_dataloader.dataset)


@pytest.fixture
def coco_copy(coco, tmp_path):
    root = str(tmp_path / 'coco')
    shutil.copytree(coco, root)
    return root


def test_unusual_image_formats_are_converted(coco_copy):
    ds = build_train_dataset(coco_copy)
    paths = [ds.get_data_info(i)['img_path'] for i in range(3)]
    rgb = cv2.imread(paths[0])
    # grayscale, RGBA and 16-bit images behind the same file names
    cv2.imwrite(paths[0] + '.png', cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY))
    os.replace(paths[0] + '.png', paths[0])
    cv2.imwrite(paths[1] + '.png', cv2.cvtColor(cv2.imread(paths[1]),
                                                cv2.COLOR_BGR2BGRA))
    os.replace(paths[1] + '.png', paths[1])
    cv2.imwrite(paths[2] + '.png',
                cv2.imread(paths[2]).astype(np.uint16) * 257)
    os.replace(paths[2] + '.png', paths[2])
    assert cv2.imread(paths[2], cv2.IMREAD_UNCHANGED).dtype == np.uint16
    for i in range(3):
        inputs = ds[i]['inputs']
        assert inputs.shape[0] == 3 and inputs.dtype == torch.uint8
    # the 16-bit image keeps its content, scaled to 8 bits
    assert abs(ds[2]['inputs'].float().mean().item() -
               rgb.mean()) < 40


def test_missing_and_unreadable_images_name_the_file(coco_copy):
    ds = build_train_dataset(coco_copy)
    missing = ds.get_data_info(0)['img_path']
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=osp.basename(missing)):
        ds[0]
    broken = ds.get_data_info(1)['img_path']
    with open(broken, 'wb') as f:
        f.write(b'not an image at all')
    with pytest.raises(Exception, match=osp.basename(broken)):
        ds[1]


def test_malformed_annotation_file_is_named(failing_runs):
    res = failing_runs['bad_json'][1]()
    assert res.returncode != 0
    assert 'instances_train2017.json' in res.stdout
    assert 'not valid JSON' in res.stdout
    res = failing_runs['no_ann'][1]()
    assert res.returncode != 0
    assert 'annotation file not found' in res.stdout
    assert 'instances_train2017.json' in res.stdout


def test_nan_loss_stops_training_naming_the_iteration(failing_runs):
    res = failing_runs['nan'][1]()
    assert res.returncode != 0
    assert 'FloatingPointError' in res.stdout
    assert 'loss became nan at iteration' in res.stdout or \
        'loss became inf at iteration' in res.stdout


def test_classification_iter_based_sigkill_then_resume(hooks_dir, tmp_path):
    """FCViT-tiny classifier, iteration-based, with the recipe's random
    augmentation (RandAugment, erasing, Mixup/CutMix in the main process)
    and drop-path: killed after the iteration-4 checkpoint and resumed, it
    ends with the weights of the uninterrupted run, bit for bit."""
    from mmengine.config import Config

    from fcvit_mm.datasets import make_shapes_dataset
    data = make_shapes_dataset(str(tmp_path / 'data'), fmt='imagenet',
                               num_train=8, num_val=3, img_size=64,
                               seed=0)['root']
    path = small_classifier_config('fcvit_tiny_in1k.py', data,
                                   str(tmp_path / 'cfg'))
    cfg = Config.fromfile(path)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=6,
                         val_interval=100)
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', T_max=6,
                                by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2,
                                        by_epoch=False)
    cfg.train_dataloader.num_workers = 1
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    cfg.custom_imports = dict(imports=['fcvit_mm', TEST_HOOKS],
                              allow_failed_imports=False)
    cfg.custom_hooks = OUR_HOOKS
    full_cfg = str(tmp_path / 'full_cfg.py')
    cfg.dump(full_cfg)
    cfg.custom_hooks = OUR_HOOKS + [dict(type='KillAfterCheckpoint',
                                         iteration=4)]
    kill_cfg = str(tmp_path / 'kill_cfg.py')
    cfg.dump(kill_cfg)

    full_run = start_train(full_cfg, str(tmp_path / 'full'), [], hooks_dir,
                           ['--no-validate'])
    work = str(tmp_path / 'interrupted')
    res = train(kill_cfg, work, [], hooks_dir, ['--no-validate'])
    assert res.returncode == -signal.SIGKILL, res.stdout[-4000:]
    assert osp.exists(osp.join(work, 'iter_4.pth'))
    res = resume_beside(full_run, full_cfg, work, [], hooks_dir)
    assert 'resumed epoch: 0, iter: 4' in res.stdout
    assert_same_weights(str(tmp_path / 'full' / 'iter_6.pth'),
                        osp.join(work, 'iter_6.pth'))
