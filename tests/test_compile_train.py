"""mmengine's ``compile`` through the libraries' own ``tools/train.py``
(mmdet, mmseg, mmpretrain, as shipped in their ``.mim``): configs that
inherit our demo configs train a couple of iterations to the end with
``compile=dict(...)``; and detection's varying input sizes, counted: once
the first sizes have been seen, a new size recompiles no graph that holds
backbone code.

CPU compiles are slow on two cores: the classification and segmentation
runs compile with ``aot_eager`` (dynamo's graph capture, where graph breaks
and failures of mmengine's compiled ``train_step`` show, and AOT autograd's
joint forward-backward graph, without code generation), the recompile count
with a counting backend (capture only). Inductor (mmengine's default
backend) adds only its C++ code generation, which took 278 s of this file's
505 s on 2 cores; ``FCVIT_TEST_COMPILE_BACKEND=inductor`` runs the
classification case through it (as for tests/test_compile_backbone.py).
The three runs start together (one thread each: two cores run two of them
side by side) and each test waits for its own.
"""
import json
import os
import os.path as osp
import sys

import pytest

from conftest import ROOT
from helpers import (generated_shapes, selected, start_process,
                     stop_unfinished)

#: each test trains, compiles or runs a tool (make test-fast leaves them out)
pytestmark = pytest.mark.slow

CONFIGS = osp.join(ROOT, 'configs')
LIBS = dict(detection='mmdet', segmentation='mmseg',
            classification='mmpretrain')
DEMOS = dict(
    detection='detection/demo_maskrcnn_fcvit_tiny_shapes.py',
    segmentation='segmentation/demo_fpn_fcvit_tiny_shapes.py',
    classification='classification/demo_fcvit_tiny_shapes.py')
BACKENDS = dict(detection='aot_eager', segmentation='aot_eager',
                classification=os.environ.get('FCVIT_TEST_COMPILE_BACKEND',
                                              'aot_eager'))
FORMATS = dict(detection='coco', segmentation='ade20k',
               classification='imagenet')
MAX_ITERS = dict(detection=3, segmentation=2, classification=2)

#: the demo configs, two or three iterations at 64 x 64 on the generated
#: shapes, no validation within them, one loader process
SMALL = '''
_base_ = {base!r}
data_root = {root!r}
max_iters = {iters}
train_cfg = dict(max_iters=max_iters, val_interval=100)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=100, save_last=False))
compile = dict(backend={backend!r})
randomness = dict(seed=0)
# a four-block FCViT (one block per stage; each task's model takes it):
# compiling (dynamo's tracing, inductor's code generation when asked for)
# is the cost here, and grows with the blocks
four_blocks = dict(arch=dict(_delete_=True, layers=[1, 1, 1, 1],
                             embed_dims=[16, 32, 48, 64],
                             mlp_ratios=[2, 2, 2, 2]))
'''
SMALL_TASK = dict(
    # images at several sizes, batches padded to one size; the counting
    # backend and its hook (tests/compile_counter.py)
    detection='''
custom_imports = dict(imports=['fcvit_mm', 'compile_counter'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='CompileCountHook')]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(64, 48), (96, 96), (128, 80)],
         keep_ratio=True),
    dict(type='PackDetInputs')]
model = dict(backbone=four_blocks, neck=dict(in_channels=[16, 32, 48, 64]),
             data_preprocessor=dict(batch_augments=[
    dict(type='BatchFixedSizePad', size=(128, 128), pad_mask=True)]))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root,
                                     pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
''',
    segmentation='''
model = dict(backbone=four_blocks, neck=dict(in_channels=[16, 32, 48, 64]),
             data_preprocessor=dict(size=(64, 64)))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
''',
    classification='''
# one parameter group (with the recipe's no-decay groups, dynamo of torch
# 2.14 fails inside AdamW.step: see docs/performance.md)
optim_wrapper = dict(paramwise_cfg=None)
model = dict(backbone=four_blocks, head=dict(in_channels=64))
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
''')


def _library_train_py(task):
    lib = pytest.importorskip(LIBS[task])
    tool = osp.join(osp.dirname(lib.__file__), '.mim', 'tools', 'train.py')
    if not osp.isfile(tool):
        pytest.skip(f'this {LIBS[task]} installation ships no tools/train.py')
    return tool


def _start(task, tmp_path_factory, extra_env=None, backend=None):
    """The library's own train.py on the small config, started in the
    background (output to a file); call the result for its output."""
    tool = _library_train_py(task)
    root = generated_shapes(tmp_path_factory, f'compile_{task}',
                            FORMATS[task], num_train=4, num_val=2,
                            img_size=64, seed=0)
    work = tmp_path_factory.mktemp(f'compile_{task}_work')
    cfg = work / 'small.py'
    cfg.write_text(SMALL.format(base=osp.join(CONFIGS, DEMOS[task]),
                                root=root.rstrip('/') + '/',
                                backend=backend or BACKENDS[task],
                                iters=MAX_ITERS[task]) +
                   SMALL_TASK[task])
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join([ROOT, osp.join(ROOT, 'tests')]),
               **(extra_env or {}))
    run = start_process(
        [sys.executable, tool, str(cfg), '--work-dir', str(work / 'w')],
        work / 'output.txt', cwd=ROOT, env=env)

    def finish():
        res = run(900)
        output = res.stdout
        assert res.returncode == 0, output[-4000:]
        assert 'Model has been "compiled"' in output, output[-4000:]
        last = f'Iter(train) [{MAX_ITERS[task]}/{MAX_ITERS[task]}]'
        lines = [ln for ln in output.splitlines() if last in ln]
        assert lines, output[-4000:]
        assert ' loss: ' in lines[0] and 'nan' not in lines[0].lower()
        return output

    finish.proc = run.proc
    return finish


@pytest.fixture(scope='module')
def runs(request, tmp_path_factory):
    """The train.py runs of this module's selected tests, all started by
    the first of them: each is one process on one thread (compiling is
    single-threaded), so on two cores two go side by side; each test waits
    for its own. ``runs[task]()``: its output (a skip where the library
    ships no tools/train.py). The detection run counts its compiles into
    ``runs['detection_log']``."""
    tests = selected(request)
    tasks = {task for task in LIBS
             if f'test_compile_through_library_train_py[{task}]' in tests}
    if 'test_detection_compiles_backbone_once_across_sizes' in tests:
        tasks.add('detection')
    started = {}
    for task in ('detection', 'segmentation', 'classification'):
        if task not in tasks:
            continue
        kwargs = {}
        if task == 'detection':
            log = tmp_path_factory.mktemp('compile_count') / 'compiles.jsonl'
            started['detection_log'] = log
            kwargs = dict(extra_env=dict(FCVIT_COMPILE_LOG=str(log)),
                          backend='fcvit_count_eager')
        try:
            started[task] = _start(task, tmp_path_factory, **kwargs)
        except pytest.skip.Exception as e:
            started[task] = lambda msg=str(e): pytest.skip(msg)
    yield started
    stop_unfinished(started.values())


@pytest.mark.parametrize('task', ['segmentation', 'classification'])
def test_compile_through_library_train_py(task, runs):
    runs[task]()


def test_detection_compiles_backbone_once_across_sizes(runs):
    """mmdet's train.py, ``compile=dict(backend=...)``: images resized to
    several sizes, batches padded to one fixed size by the data
    preprocessor (``BatchFixedSizePad``, the bound docs/performance.md
    describes): the graphs holding backbone code are compiled in the first
    iteration only."""
    runs['detection']()
    log = runs['detection_log']
    records = [json.loads(ln) for ln in log.read_text().splitlines()]
    sizes = {tuple(map(tuple, r['sizes'])) for r in records
             if r['kind'] == 'batch'}
    raw = {tuple(s) for batch in sizes for s in batch}
    assert len(raw) >= 2, raw  # the images came in several sizes
    graphs = [r for r in records if r['kind'] == 'graph']
    first = min(r['iter'] for r in graphs)
    assert any(r['backbone'] for r in graphs if r['iter'] == first)
    later = [r for r in graphs if r['iter'] > first and r['backbone']]
    assert later == [], later
