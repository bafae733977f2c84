"""The run layer (fcvit_mm/engine) on a toy mmengine model (fast): atomic
checkpoint writes, saves that never lose the previous checkpoint, resume
fallback past corrupt checkpoints, random-state restore, NaN stop, dataset
file checks. The real configs are exercised end to end in
test_e2e_reliability.py."""
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

import fcvit_mm  # noqa: F401
from fcvit_mm.engine.data_checks import DatasetError, check_annotation_files
from fcvit_mm.engine.checkpoints import AtomicLocalBackend
from fcvit_mm.engine.resume import (check_resumable, checkpoint_candidates,
                                    find_resumable_checkpoint)
from fcvit_mm.models.checkpoint import CheckpointError, safe_load

from conftest import ROOT


class NoisyToy(BaseModel):
    """Uses the torch and numpy generators in every step (dropout, noise)."""

    def __init__(self, nan_at=None, bad_loss=float('nan')):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.5)
        self.nan_at = nan_at  # from this call on, the loss is ``bad_loss``
        self.bad_loss = bad_loss
        self.calls = 0

    def forward(self, x, y=None, mode='loss'):
        self.calls += 1
        import numpy as np
        noise = torch.as_tensor(np.random.rand(), dtype=torch.float32)
        out = self.lin(self.drop(x)).squeeze(-1) + 0.01 * noise
        if mode != 'loss':
            return out
        loss = (out - y).square().mean()
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss + self.bad_loss
        return dict(loss=loss)


class NoisyDataset(torch.utils.data.Dataset):
    """Random augmentation (torch generator) in the data pipeline."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, generator=g) + 0.1 * torch.randn(4)
        return dict(x=x, y=x.sum())


RUNNERS = itertools.count()


def make_runner(work_dir, max_epochs, resume=False, by_epoch=True,
                nan_at=None, hooks=('RandomStateHook', ), seed=7,
                checkpoint=None, model=None, clip_grad=None, load_from=None):
    loop = dict(by_epoch=True, max_epochs=max_epochs) if by_epoch else \
        dict(by_epoch=False, max_iters=max_epochs * 4)
    torch.manual_seed(0)  # same initial weights in every run
    ckpt = dict(type='SafeCheckpointHook', interval=1 if by_epoch else 4,
                by_epoch=by_epoch)
    ckpt.update(checkpoint or {})
    return Runner(
        model=model or NoisyToy(nan_at=nan_at),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=NoisyDataset(), batch_size=4, num_workers=1,
            persistent_workers=False,
            sampler=dict(type='DefaultSampler' if by_epoch else
                         'InfiniteSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05,
                                          momentum=0.9), clip_grad=clip_grad),
        param_scheduler=dict(type='MultiStepLR', milestones=[2],
                             by_epoch=by_epoch),
        train_cfg=loop,
        default_hooks=dict(checkpoint=ckpt,
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type=h) for h in ('SafeResumeHook', ) + hooks],
        randomness=dict(seed=seed),
        # its own message hub and logger, even for runners made within the
        # same second (mmengine names them after the time by default)
        experiment_name=f'toy_{next(RUNNERS)}',
        resume=resume,
        load_from=load_from,
        default_scope='mmengine')


class Crash(Exception):
    pass


class CrashAfterCheckpoint(Hook):
    """Dies right after the checkpoint of epoch 2 / iteration 8 is written."""

    priority = 'LOWEST'

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == 2:
            raise Crash

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if not runner.train_loop.__class__.__name__.startswith('Epoch') \
                and runner.iter + 1 == 8:
            raise Crash


def interrupted_then_resumed(work_dir, by_epoch=True, hooks=None, seed=7):
    kwargs = dict(by_epoch=by_epoch, seed=seed)
    if hooks is not None:
        kwargs['hooks'] = hooks
    part = make_runner(work_dir, 4, **kwargs)
    part.register_hook(CrashAfterCheckpoint())
    with pytest.raises(Crash):
        part.train()
    resumed = make_runner(work_dir, 4, resume=True, **kwargs)
    resumed.train()
    return part, resumed


@pytest.mark.parametrize('by_epoch', [True, False])
def test_resume_reproduces_uninterrupted_run(tmp_path, by_epoch):
    full = make_runner(tmp_path / 'full', 4, by_epoch=by_epoch)
    full.train()
    w_full = full.model.lin.weight.detach().clone()
    part, resumed = interrupted_then_resumed(tmp_path / 'part', by_epoch)
    assert not torch.equal(part.model.lin.weight, w_full)
    torch.testing.assert_close(resumed.model.lin.weight, w_full, rtol=0,
                               atol=0)


@pytest.mark.slow
@pytest.mark.parametrize('named', [False, True])
def test_resume_reads_the_checkpoint_once(tmp_path, monkeypatch, named):
    """--resume (bare, or naming the file) checks the checkpoint and resumes
    from the copy it read: one torch.load of the file, not two."""
    make_runner(tmp_path, 2).train()
    loads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        loads.append(os.path.basename(str(f)))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, 'load', counting_load)
    resumed = make_runner(tmp_path, 3, resume=True,
                          load_from=str(tmp_path / 'epoch_2.pth')
                          if named else None)
    resumed.train()
    assert resumed.epoch == 3
    assert loads.count('epoch_2.pth') == 1, loads


def test_without_random_state_resume_differs(tmp_path):
    """The hook is what makes the resumed run exact (dropout + numpy noise
    on the main process)."""
    full = make_runner(tmp_path / 'full', 4, hooks=())
    full.train()
    _, resumed = interrupted_then_resumed(tmp_path / 'part', hooks=())
    assert not torch.equal(resumed.model.lin.weight, full.model.lin.weight)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_loss_stops_with_iteration(tmp_path, bad):
    """A NaN loss stops the run at its iteration, and so does an infinite
    one (it turns the weights into NaN at the next step)."""
    runner = make_runner(tmp_path, 2, hooks=('FiniteLossHook', ),
                         model=NoisyToy(nan_at=3, bad_loss=bad))
    with pytest.raises(FloatingPointError,
                       match=f'loss became {bad} at iteration 3'):
        runner.train()


def test_resume_skips_corrupt_last_checkpoint(tmp_path):
    runner = make_runner(tmp_path, 3)
    runner.train()
    last = tmp_path / 'epoch_3.pth'
    data = last.read_bytes()
    last.write_bytes(data[:len(data) // 3])  # a torn write
    assert (tmp_path / 'last_checkpoint').read_text().strip().endswith(
        'epoch_3.pth')

    class Log(list):
        def warning(self, msg):
            self.append(msg)

    log = Log()
    path, meta, _ = find_resumable_checkpoint(str(tmp_path), log)
    assert path.endswith('epoch_2.pth') and meta['epoch'] == 2
    assert any('epoch_3.pth' in m for m in log)
    # nothing resumable at all
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert find_resumable_checkpoint(str(empty)) == (None, {}, None)


def test_resume_skips_a_file_without_state_dict(tmp_path):
    """A weights file in the work dir that is not a training checkpoint (a
    bare state dict: no ``state_dict``, no ``meta``) is refused, naming
    it; a bare --resume passes over it to the newest checkpoint (not a
    ``KeyError: 'meta'`` from mmengine), and --resume naming it fails at
    once."""
    make_runner(tmp_path, 2).train()
    weights = tmp_path / 'weights_epoch_3.pth'
    torch.save(NoisyToy().state_dict(), weights)
    (tmp_path / 'last_checkpoint').write_text(str(weights))
    with pytest.raises(CheckpointError, match='weights_epoch_3.pth.*holds '
                       'no "state_dict"'):
        check_resumable(str(weights))
    resumed = make_runner(tmp_path, 3, resume=True)
    resumed.train()
    assert resumed.epoch == 3
    with pytest.raises(CheckpointError, match='weights_epoch_3.pth'):
        make_runner(tmp_path / 'named', 3, resume=True,
                    load_from=str(weights)).train()


def test_best_checkpoint_orders_by_its_epoch(tmp_path):
    """The classification configs' save-best file of epoch 5 is newer than
    epoch_4.pth (its number is the epoch, not the 1 of 'top1'), whatever
    the files' times."""
    for name in ('best_accuracy_top1_epoch_5.pth', 'epoch_4.pth',
                 'epoch_3.pth'):
        (tmp_path / name).write_bytes(b'')
    os.utime(tmp_path / 'best_accuracy_top1_epoch_5.pth', (0, 0))
    assert [os.path.basename(p) for p in checkpoint_candidates(
        str(tmp_path))] == ['best_accuracy_top1_epoch_5.pth', 'epoch_4.pth',
                            'epoch_3.pth']


@pytest.mark.slow
def test_checkpoint_write_is_atomic_under_sigkill(tmp_path):
    """SIGKILL while a checkpoint is being written (bytes written, not yet
    renamed): the previous checkpoint at that path is intact."""
    target = tmp_path / 'latest.pth'
    torch.save({'state_dict': {'w': torch.ones(3)}}, target)
    code = textwrap.dedent(f'''
        import os, sys, time, torch
        import fcvit_mm
        from mmengine.runner.checkpoint import save_checkpoint
        def hang(fd):
            print('writing', flush=True)
            time.sleep(60)
        os.fsync = hang
        save_checkpoint({{'state_dict': {{'w': torch.zeros(1000000)}}}},
                        {str(target)!r},
                        backend_args=dict(backend='atomic_local'))
    ''')
    proc = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    lines = []
    while 'writing' not in lines:  # mmengine may log a line first
        line = proc.stdout.readline()
        assert line, f'writer ended early: {lines}'
        lines.append(line.strip())
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ckpt = safe_load(str(target))
    torch.testing.assert_close(ckpt['state_dict']['w'], torch.ones(3))
    # a normal write lands, and leaves no temporary file
    backend = AtomicLocalBackend()
    backend.put(b'abc', tmp_path / 'sub' / 'f.bin')
    assert (tmp_path / 'sub' / 'f.bin').read_bytes() == b'abc'
    assert [p.name for p in (tmp_path / 'sub').iterdir()] == ['f.bin']


def test_annotation_file_checks(tmp_path):
    good = tmp_path / 'good.json'
    good.write_text('{"images": [], "annotations": [], "categories": []}')
    bad = tmp_path / 'bad.json'
    bad.write_text('{"images": [')
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2,
            dataset=dict(data_root=str(tmp_path), ann_file='good.json'))),
        val_dataloader=dict(dataset=dict(data_root=str(tmp_path),
                                         ann_file='bad.json')),
        test_dataloader=dict(dataset=dict(
            data_root=str(tmp_path), ann_file='missing/instances.json'))))
    check_annotation_files(cfg, ['train_dataloader'])
    with pytest.raises(DatasetError, match='bad.json.*not valid JSON'):
        check_annotation_files(cfg, ['train_dataloader', 'val_dataloader'])
    with pytest.raises(DatasetError,
                       match='not found.*missing/instances.json'):
        check_annotation_files(cfg, ['test_dataloader'])


# --------------------------------------------------------------------------
# SafeCheckpointHook: no save loses a checkpoint; --resume that says why
# --------------------------------------------------------------------------
def _loads(path):
    return 'state_dict' in safe_load(str(path))


@pytest.mark.parametrize('hook,keeps', [('CheckpointHook', False),
                                        ('SafeCheckpointHook', True)])
def test_failed_save_keeps_the_previous_checkpoint(tmp_path, hook, keeps):
    """max_keep_ckpts=1 and the next save's path is a directory: mmengine's
    own hook has removed the only checkpoint before failing; ours keeps it."""
    (tmp_path / 'epoch_2.pth').mkdir()
    runner = make_runner(tmp_path, 3, checkpoint=dict(type=hook,
                                                      max_keep_ckpts=1))
    with pytest.raises(OSError):
        runner.train()
    assert (tmp_path / 'epoch_1.pth').is_file() == keeps
    if keeps:
        assert _loads(tmp_path / 'epoch_1.pth')
        assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


def test_successful_saves_still_rotate(tmp_path):
    make_runner(tmp_path, 3, checkpoint=dict(max_keep_ckpts=1)).train()
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth')) \
        == ['epoch_3.pth']


KILL_DURING_SECOND_SAVE = '''
import os, sys, time
sys.path.insert(0, {tests!r})
import test_run_layer as t
calls = []
real_fsync = os.fsync
def fsync(fd):
    calls.append(fd)
    if len(calls) == 2:  # the epoch-2 checkpoint: bytes written, not renamed
        print('writing', flush=True)
        time.sleep(120)
    real_fsync(fd)
os.fsync = fsync
t.make_runner({work!r}, 4, checkpoint=dict(max_keep_ckpts=1),
              seed={seed}).train()
'''


def _kill_during_second_save(work, seed):
    code = KILL_DURING_SECOND_SAVE.format(tests=osp_tests(), work=str(work),
                                          seed=seed)
    proc = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    lines = []
    while 'writing' not in lines:
        line = proc.stdout.readline()
        assert line, f'training ended early: {lines}'
        lines.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def osp_tests():
    return os.path.join(ROOT, 'tests')


@pytest.mark.slow
@pytest.mark.parametrize('seed', [7, None])
def test_sigkill_during_save_then_resume(tmp_path, seed):
    """Killed (SIGKILL) while writing the epoch-2 checkpoint with
    max_keep_ckpts=1: epoch_1.pth is still there and loads; the next start
    removes the temporary file and --resume continues from epoch 1 to the
    weights of an uninterrupted run (with ``seed=None`` too: the resumed run
    takes the checkpoint's seed before its data loader draws anything)."""
    work = tmp_path / 'work'
    _kill_during_second_save(work, seed)
    assert _loads(work / 'epoch_1.pth')
    assert not (work / 'epoch_2.pth').exists()
    leftovers = [p for p in os.listdir(work) if p.endswith('.tmp')]
    assert len(leftovers) == 1 and leftovers[0].startswith('.epoch_2.pth.')
    first_seed = safe_load(str(work / 'epoch_1.pth'))['meta']['seed']

    resumed = make_runner(work, 4, resume=True, seed=seed,
                          checkpoint=dict(max_keep_ckpts=1))
    resumed.train()
    assert not [p for p in os.listdir(work) if p.endswith('.tmp')]
    assert sorted(p for p in os.listdir(work) if p.endswith('.pth')) == \
        ['epoch_4.pth']
    full = make_runner(tmp_path / 'full', 4, seed=first_seed)
    full.train()
    torch.testing.assert_close(resumed.model.lin.weight,
                               full.model.lin.weight, rtol=0, atol=0)


def test_resume_fails_when_no_checkpoint_loads(tmp_path):
    make_runner(tmp_path, 2).train()
    for name in ('epoch_1.pth', 'epoch_2.pth'):
        (tmp_path / name).write_bytes(b'torn')
    with pytest.raises(CheckpointError) as e:
        make_runner(tmp_path, 3, resume=True).train()
    msg = str(e.value)
    assert 'none of the checkpoints' in msg
    assert 'epoch_1.pth' in msg and 'epoch_2.pth' in msg and 'corrupt' in msg
    # nothing to resume: a fresh start
    fresh = make_runner(tmp_path / 'empty', 1, resume=True)
    fresh.train()
    assert (tmp_path / 'empty' / 'epoch_1.pth').is_file()


class FCViTToy(BaseModel):
    """A tiny FCViT with a linear head (for variant checks)."""

    def __init__(self, dims, drop_path_rate=0.):
        super().__init__()
        from fcvit_mm.models import FCViT
        self.backbone = FCViT(arch=dict(layers=[1, 1, 1, 1], embed_dims=dims,
                                        mlp_ratios=[1, 1, 1, 1]),
                              out_indices=(3, ),
                              drop_path_rate=drop_path_rate)
        self.head = nn.Linear(dims[-1], 1)

    def forward(self, x, y=None, mode='loss'):
        x = x.view(-1, 1, 1, 4).expand(-1, 3, 32, 4).repeat(1, 1, 1, 8)
        out = self.head(self.backbone(x)[0].mean((2, 3))).squeeze(-1)
        return dict(loss=(out - y).square().mean()) if mode == 'loss' \
            else out


@pytest.mark.slow
def test_resume_in_work_dir_of_another_variant(tmp_path):
    small, big = [8, 16, 24, 32], [16, 32, 48, 64]
    make_runner(tmp_path, 1, model=FCViTToy(small)).train()
    with pytest.raises(CheckpointError) as e:
        make_runner(tmp_path, 2, resume=True, model=FCViTToy(big)).train()
    msg = str(e.value)
    assert 'epoch_1.pth' in msg and 'another variant' in msg
    assert 'param_groups' not in msg and 'optimizer' not in msg
    # load_from (fine-tuning from a whole-model checkpoint): the same rule
    with pytest.raises(CheckpointError, match='another variant'):
        make_runner(tmp_path / 'ft', 1, model=FCViTToy(big),
                    load_from=str(tmp_path / 'epoch_1.pth')).train()


def test_nan_stop_names_likely_causes(tmp_path):
    runner = make_runner(tmp_path, 2, nan_at=2, hooks=('FiniteLossHook', ))
    with pytest.raises(FloatingPointError) as e:
        runner.train()
    msg = str(e.value)
    assert 'no gradient clipping' in msg and 'learning rate (0.05)' in msg
    assert 'drop-path' not in msg
    model = NoisyToy(nan_at=1)
    model.drop_path = nn.Module()
    model.drop_path.drop_prob = 1.5
    runner = make_runner(tmp_path / 'dp', 2, model=model,
                         hooks=('FiniteLossHook', ),
                         clip_grad=dict(max_norm=1.0))
    with pytest.raises(FloatingPointError) as e:
        runner.train()
    msg = str(e.value)
    assert msg.index('drop-path probability of 1.5') < \
        msg.index('learning rate')
    assert 'no gradient clipping' not in msg


def test_drop_path_rate_of_one_is_named_as_the_cause(tmp_path):
    """drop_path_rate=1.0 drops every sample of the last block (0 / 0: the
    loss is NaN at once); the stop names it first among the causes."""
    runner = make_runner(tmp_path, 1, hooks=('FiniteLossHook', ),
                         model=FCViTToy([8, 16, 24, 32], drop_path_rate=1.0),
                         clip_grad=dict(max_norm=1.0))
    with pytest.raises(FloatingPointError) as e:
        runner.train()
    msg = str(e.value)
    assert 'at iteration 1' in msg and \
        'drop-path probability of 1 ' in msg, msg
    assert msg.index('drop-path probability of 1 ') < \
        msg.index('learning rate')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_random_state_restores_from_gpu_mapped_checkpoint():
    """A resumed checkpoint is mapped to the training device: the saved
    generator states then arrive as CUDA tensors (seen on an H100: "can't
    convert cuda:0 device type tensor to numpy")."""
    from fcvit_mm.engine.determinism import RandomStateHook
    torch.cuda.init()
    state = RandomStateHook.get_state()
    expected = (torch.rand(3), np.random.rand(3), torch.rand(3, device='cuda'))

    def to_cuda(x):
        if torch.is_tensor(x):
            return x.cuda()
        if isinstance(x, dict):
            return {k: to_cuda(v) for k, v in x.items()}
        if isinstance(x, list):
            return [to_cuda(v) for v in x]
        return x

    RandomStateHook.set_state(to_cuda(state))
    again = (torch.rand(3), np.random.rand(3), torch.rand(3, device='cuda'))
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert torch.equal(expected[2], again[2])
