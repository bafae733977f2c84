"""Engine pieces that keep training safe: atomic checkpoint writes, resume
fallback past corrupt checkpoints, random-state restore, NaN stop, dataset
file checks. Exercised on a toy mmengine model (fast); the detection and
classification configs are exercised end to end in test_reliability.py."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

import fcvit_mm  # noqa: F401
from fcvit_mm.engine.checkpoint_io import (AtomicLocalBackend,
                                           find_resumable_checkpoint)
from fcvit_mm.engine.data_checks import DatasetError, check_annotation_files
from fcvit_mm.utils.checkpoint import safe_load

from conftest import ROOT


class NoisyToy(BaseModel):
    """Uses the torch and numpy generators in every step (dropout, noise)."""

    def __init__(self, nan_at=None):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.5)
        self.nan_at = nan_at
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
            loss = loss * float('nan')
        return dict(loss=loss)


class NoisyDataset(torch.utils.data.Dataset):
    """Random augmentation (torch generator) in the data pipeline."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, generator=g) + 0.1 * torch.randn(4)
        return dict(x=x, y=x.sum())


def make_runner(work_dir, max_epochs, resume=False, by_epoch=True,
                nan_at=None, hooks=('RandomStateHook', )):
    loop = dict(by_epoch=True, max_epochs=max_epochs) if by_epoch else \
        dict(by_epoch=False, max_iters=max_epochs * 4)
    torch.manual_seed(0)  # same initial weights in every run
    return Runner(
        model=NoisyToy(nan_at=nan_at),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=NoisyDataset(), batch_size=4, num_workers=1,
            persistent_workers=False,
            sampler=dict(type='DefaultSampler' if by_epoch else
                         'InfiniteSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05,
                                          momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[2],
                             by_epoch=by_epoch),
        train_cfg=loop,
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1 if by_epoch
                            else 4, by_epoch=by_epoch),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type=h) for h in hooks],
        randomness=dict(seed=7),
        resume=resume,
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


def interrupted_then_resumed(work_dir, by_epoch=True, hooks=None):
    kwargs = dict(by_epoch=by_epoch)
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


def test_without_random_state_resume_differs(tmp_path):
    """The hook is what makes the resumed run exact (dropout + numpy noise
    on the main process)."""
    full = make_runner(tmp_path / 'full', 4, hooks=())
    full.train()
    _, resumed = interrupted_then_resumed(tmp_path / 'part', hooks=())
    assert not torch.equal(resumed.model.lin.weight, full.model.lin.weight)


def test_nan_loss_stops_with_iteration(tmp_path):
    runner = make_runner(tmp_path, 2, nan_at=3,
                         hooks=('FiniteLossHook', ))
    with pytest.raises(FloatingPointError, match='iteration 3'):
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
    path, meta = find_resumable_checkpoint(str(tmp_path), log)
    assert path.endswith('epoch_2.pth') and meta['epoch'] == 2
    assert any('epoch_3.pth' in m for m in log)
    # nothing resumable at all
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert find_resumable_checkpoint(str(empty)) == (None, {})


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
                        {str(target)!r})
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
    # the backend is mmengine's local one, and a normal write lands
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
