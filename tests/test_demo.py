"""`make demo` end to end, shortened: generated data, tools/train.py and
tools/test.py (their own processes, one thread each), the curves, the
libraries' drawings of the predictions and the summary, for the three tasks
(a few iterations each, so the metrics are not checked for learning). The
three demos run as ``make demo`` runs them, each in its own process, side
by side."""
import json
import os
import os.path as osp
import sys

import cv2
import pytest
from helpers import load_tool, selected, start_process, stop_unfinished

#: each test trains, compiles or runs a tool (make test-fast leaves them out)
pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _demo():
    return load_tool('demo')


def _valid_png(path):
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    return _valid_image(path)


def _valid_image(path):
    assert osp.isfile(path), path
    img = cv2.imread(path)
    assert img is not None and img.ndim == 3
    assert img.shape[0] >= 64 and img.shape[1] >= 64
    assert img.std() > 0  # something is drawn
    return img


DEMO_CASES = [('det', 'bbox AP@0.5', 1.0), ('seg', 'mIoU', 100.0),
              ('cls', 'top-1', 100.0)]
#: per task: its --precision arguments, the CPU's bf16 as the run sees it
#: (FCVIT_MM_CPU_BF16; None: the machine's), what the demo must say it
#: trains in, and what tools/train.py's AmpOptimWrapper says (None: no --amp)
PRECISION = {'det': (['--precision', 'fp32'], None, 'float32', None),
             'seg': (['--amp'], '1', 'bf16 mixed precision',
                     'CPU mixed precision, bf16 autocast'),
             'cls': ([], '0', 'float32, not bf16', None)}


@pytest.fixture(scope='module')
def demo_runs(request, tmp_path_factory):
    """``python tools/demo.py`` (as ``make demo`` runs it) for each
    selected task, all started together by the first test: each mostly
    waits for its own tools/train.py and tools/test.py, which run on one
    thread. ``task: (folder, finish)``; ``finish()`` gives its
    CompletedProcess (``stdout``: the output)."""
    tests = selected(request)
    runs = {}
    for task, metric, top in DEMO_CASES:
        if f'test_short_demo[{task}-{metric}-{top}]' not in tests:
            continue
        folder = tmp_path_factory.mktemp(f'demo_{task}')
        precision, bf16, _, _ = PRECISION[task]
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        if bf16 is not None:
            env['FCVIT_MM_CPU_BF16'] = bf16
        finish = start_process(
            [sys.executable, osp.join(ROOT, 'tools', 'demo.py'),
             '--task', task, '--work-dir', str(folder / 'work'),
             '--data-root', str(folder / 'data'), '--num-train', '8',
             '--num-val', '4', '--max-iters', '3', '--val-interval', '3',
             '--num-show', '3', '--num-workers', '0', '--threads', '1',
             '--cfg-options', 'train_dataloader.batch_size=2',
             'val_dataloader.batch_size=2', 'test_dataloader.batch_size=2']
            + precision,
            folder / 'output.txt', timeout=900, cwd=ROOT, env=env)
        runs[task] = folder, finish
    yield runs
    stop_unfinished(finish for _, finish in runs.values())


@pytest.mark.parametrize('task,metric,top', DEMO_CASES)
def test_short_demo(demo_runs, capsys, task, metric, top):
    demo = _demo()
    tmp_path, finish = demo_runs[task]
    res = finish()
    out = res.stdout
    assert res.returncode == 0, out[-4000:]
    work_dir = tmp_path / 'work'
    with open(work_dir / 'summary.json') as f:
        summary = json.load(f)
    # it says what it trains in, and trains in it
    _, _, said, wrapper_said = PRECISION[task]
    assert summary['precision'].startswith(said)
    assert f'in {said}' in out
    if wrapper_said:
        assert f'AmpOptimWrapper: {wrapper_said}' in out
    else:  # no --amp given to tools/train.py: mmengine's plain wrapper
        assert 'AmpOptimWrapper' not in out
    # what the demo printed at its end is the summary it wrote
    demo.print_summary(summary)
    assert capsys.readouterr().out in out, out[-4000:]
    # the data were generated in the task's real layout
    layout = dict(det='coco', seg='ade20k', cls='imagenet')[task]
    assert summary['data_root'] == str(tmp_path / 'data' / layout)
    assert osp.isfile(osp.join(summary['data_root'], 'shapes_meta.json'))
    # trained for the asked budget with tools/train.py, config in work dir
    assert summary['max_iters'] == 3 and summary['batch_size'] == 2
    assert osp.isfile(summary['checkpoint'])
    assert summary['checkpoint'].endswith('iter_3.pth')
    assert osp.dirname(summary['config']) == str(work_dir)
    # evaluated: the task's metric in its range
    assert 0.0 <= summary['metrics'][metric] <= top
    # the log has training losses and validation metrics for the curves
    from tools.analysis.lib.curves import read_scalars
    train, val = read_scalars(osp.join(summary['log_dir'], 'vis_data',
                                       'scalars.json'))
    assert len(train) == 3 and all('loss' in r for r in train)
    assert len(val) == 1 and val[0]['step'] == 3
    assert metric_key(demo, task, metric) in val[0]
    _valid_png(summary['curves'])
    # prediction pictures: every val image, drawn by the library's
    # visualizer (ground truth and prediction side by side for det / seg)
    assert len(summary['predictions']) == 4
    val_w = dict(det=128, seg=128, cls=64)[task]
    for path in summary['predictions']:
        assert path.startswith(str(work_dir / 'predictions') + os.sep)
        img = _valid_image(path)  # mmdet keeps the image's format
        if task != 'cls':
            assert img.shape[1] == 2 * val_w
    # the overview: the first 3 pictures in a grid of 2 (4 for cls) columns
    overview = _valid_png(summary['predictions_overview'])
    first = [cv2.imread(p) for p in summary['predictions'][:3]]
    h, w = max(i.shape[0] for i in first), max(i.shape[1] for i in first)
    cols = 4 if task == 'cls' else 2
    assert overview.shape[:2] == (h * (1 if task == 'cls' else 2), w * cols)
    assert 'final metrics on the val split' in out
    assert metric in out and summary['curves'] in out
    if task == 'det':
        _check_similarity_maps(tmp_path, summary)


def metric_key(demo, task, name):
    return dict(demo.TASKS[task]['metrics'])[name]


def _check_similarity_maps(tmp_path, summary):
    """tools/analysis/visualize_similarity.py on the demo's trained
    detector: 8 heads of the last block over a val image, as a grid PNG."""
    vis = load_tool('analysis/visualize_similarity')
    img_dir = osp.join(summary['data_root'], 'val2017')
    image = osp.join(img_dir, sorted(os.listdir(img_dir))[0])
    out = str(tmp_path / 'sim.png')
    maps = vis.main([summary['config'], summary['checkpoint'], image,
                     '--out', out, '--size', '128', '128'])
    # FCViT-tiny's last block works at stride 32: 4 x 4 tokens per head
    assert tuple(maps.shape) == (8, 4, 4)
    assert bool(maps.isfinite().all()) and float(maps.std()) > 0
    grid = _valid_png(out)
    assert grid.shape[1] > 3 * 128  # the image and the head maps


def test_schedule_rescaled():
    from mmengine.config import Config
    demo = _demo()
    cfg = Config.fromfile(osp.join(
        ROOT, demo.TASKS['det']['config']))
    old_max = cfg.train_cfg.max_iters
    warmup_end = cfg.param_scheduler[0]['end']
    demo._rescale_schedule(cfg, old_max // 4, None)
    assert cfg.train_cfg.max_iters == old_max // 4
    assert cfg.param_scheduler[0]['end'] == round(warmup_end / 4)
    assert cfg.param_scheduler[-1]['end'] == old_max // 4
    assert cfg.train_cfg.val_interval <= old_max // 4
    assert cfg.default_hooks.checkpoint.interval == \
        cfg.train_cfg.val_interval


def test_bad_arguments():
    demo = _demo()
    with pytest.raises(SystemExit):
        demo.parse_args(['--task', 'panoptic'])
    with pytest.raises(SystemExit):
        demo.parse_args(['--max-iters', '0'])


@pytest.mark.parametrize('precision,cpu_bf16,amp,said', [
    ('auto', '1', True, 'bf16 mixed precision (FCVIT_MM_CPU_BF16=1)'),
    ('auto', '0', False, 'float32, not bf16: FCVIT_MM_CPU_BF16=0'),
    ('bf16', '1', True, 'bf16 mixed precision (FCVIT_MM_CPU_BF16=1)'),
    # asked for: --amp, whose wrapper falls back to float32 and says so
    ('bf16', '0', True, 'float32, not bf16: FCVIT_MM_CPU_BF16=0'),
    ('fp32', '1', False, 'float32')])
def test_precision_follows_the_cpu(monkeypatch, precision, cpu_bf16, amp,
                                   said):
    """``make demo`` (``--precision auto``) trains in bf16 mixed precision
    where the CPU runs bf16 natively and in float32 elsewhere, saying why;
    ``--amp`` is ``--precision bf16``."""
    demo = _demo()
    monkeypatch.setenv('FCVIT_MM_CPU_BF16', cpu_bf16)
    assert demo.training_precision(precision) == (amp, said)
    assert demo.parse_args([]).precision == 'auto'
    assert demo.parse_args(['--amp']).precision == 'bf16'
    with pytest.raises(ValueError, match='precision must be one of'):
        demo.training_precision('fp16')
