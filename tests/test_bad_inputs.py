"""Bad data (COCO annotations, images, label maps, class counts) and
misspelt config keys, through ``tools/train.py`` and ``tools/test.py`` on
generated data: every problem is named (file, value, config key) before or
as the data is loaded, instead of training silently on less data or
failing deep in a library."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import cv2
import pytest
from mmengine.config import Config

import fcvit_mm  # noqa: F401
from conftest import ROOT
from fcvit_mm.engine.data_checks import (DatasetError, check_coco_content,
                                         coco_skips)
from fcvit_mm.utils.config import misspelt_keys
from helpers import generated_shapes

TOOLS = osp.join(ROOT, 'tools')
DET = osp.join(ROOT, 'configs', 'detection')
SEG_DEMO = osp.join(ROOT, 'configs', 'segmentation',
                    'demo_fpn_fcvit_tiny_shapes.py')
CLASSES = ('circle', 'square', 'triangle')


def run_tool(tool, *args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, osp.join(TOOLS, tool), *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout)


def last_error(output):
    """What the user reads of the error: the short message of a user error
    (from ``error: `` on, fcvit_mm.engine.user_errors), else the last line
    of the traceback."""
    if 'error: ' in output:
        return output[output.rindex('error: '):]
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ''


# --------------------------------------------------------------------------
# COCO annotations
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def coco_src(tmp_path_factory):
    return generated_shapes(tmp_path_factory, 'bad_coco', 'coco', num_train=4,
                            num_val=2, img_size=64, seed=3)


@pytest.fixture
def coco(coco_src, tmp_path):
    root = str(tmp_path / 'coco')
    shutil.copytree(coco_src, root)
    return root


def det_options(root, num_classes=3):
    """Mask R-CNN with FCViT-tiny on the 64 x 64 shapes, one epoch."""
    opts = ['model.backbone.arch=tiny',
            'model.neck.in_channels=[32,64,160,320]',
            f'model.roi_head.bbox_head.num_classes={num_classes}',
            f'model.roi_head.mask_head.num_classes={num_classes}',
            'train_cfg.max_epochs=1', 'randomness.seed=0',
            'train_dataloader.batch_size=4',
            'train_dataloader.dataset.pipeline.2.scale=(64,64)']
    for loader, split in (('train_dataloader', 'train2017'),
                          ('val_dataloader', 'val2017'),
                          ('test_dataloader', 'val2017')):
        opts += [f'{loader}.dataset.data_root={root}',
                 f'{loader}.dataset.ann_file=annotations/instances_{split}'
                 f'.json',
                 f'{loader}.dataset.data_prefix.img={split}/',
                 f'{loader}.dataset.metainfo.classes=({",".join(CLASSES)})',
                 f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    ann = osp.join(root, 'annotations', 'instances_val2017.json')
    return opts + [f'val_evaluator.ann_file={ann}',
                   f'test_evaluator.ann_file={ann}']


def train_det(root, work_dir, extra=()):
    return run_tool('train.py', osp.join(DET, 'maskrcnn_fcvit_b12.py'),
                    '--work-dir', work_dir, '--no-validate', '--cfg-options',
                    *det_options(root), *extra)


def edit_json(path, edit):
    with open(path) as f:
        content = json.load(f)
    edit(content)
    with open(path, 'w') as f:
        json.dump(content, f)
    return content


def test_coco_skip_reasons_follow_mmdet():
    """The annotations counted usable are those mmdet's CocoDataset keeps
    (a one-pixel-wide box is kept), and each one it drops is described by
    its reason."""
    content = dict(
        images=[dict(id=1, width=50, height=40, file_name='a.jpg')],
        categories=[dict(id=1, name='circle'), dict(id=2, name='square'),
                    dict(id=7, name='other')],
        annotations=[
            dict(id=10, image_id=1, category_id=1, bbox=[1, 1, 9, 9],
                 area=81),
            dict(id=11, image_id=1, category_id=2, bbox=[5, 5, 0, 9],
                 area=0),
            dict(id=12, image_id=1, category_id=2, bbox=[5, 5, 9, -3],
                 area=27),
            dict(id=13, image_id=1, category_id=99, bbox=[1, 1, 9, 9],
                 area=81),
            dict(id=14, image_id=1, category_id=7, bbox=[1, 1, 9, 9],
                 area=81),
            dict(id=15, image_id=5, category_id=1, bbox=[1, 1, 9, 9],
                 area=81),
            dict(id=16, image_id=1, category_id=1, bbox=[60, 1, 9, 9],
                 area=81),
            dict(id=17, image_id=1, category_id=2, bbox=[2, 2, 5, 5],
                 area=25, iscrowd=1),
            # one pixel wide: mmdet keeps it; half a pixel: it drops it
            dict(id=18, image_id=1, category_id=1, bbox=[20, 20, 1, 9],
                 area=9),
            dict(id=19, image_id=1, category_id=1, bbox=[20, 20, 0.5, 9],
                 area=4.5),
        ])
    skipped, usable, images = coco_skips(content, ('circle', 'square'))
    assert dict(skipped) == {'size': [11, 12, 19], 'category': [13],
                             'class': [14], 'image': [15], 'outside': [16]}
    assert usable == 3 and images['in_classes'] == {1, 5}

    from mmdet.datasets import CocoDataset
    from mmengine.fileio import dump
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        dump(content, osp.join(d, 'ann.json'))
        ds = CocoDataset(data_root=d, ann_file='ann.json',
                         data_prefix=dict(img=''),
                         metainfo=dict(classes=('circle', 'square')),
                         pipeline=[], lazy_init=False)
        assert len(ds.get_data_info(0)['instances']) == usable

    # a configured class that the file lacks would shift every label
    with pytest.raises(DatasetError, match=r"classes \['triangle'\].*"
                       r"no category in the file"):
        check_coco_content(content, 'ann.json', CLASSES, 'metainfo.classes',
                           training=False)
    # malformed annotations are named before mmdet trips over them
    content['annotations'].append(dict(id=30, image_id=1, category_id=1,
                                       bbox=[1, 2, 3]))
    with pytest.raises(DatasetError, match='without a valid "bbox".*id 30'):
        check_coco_content(content, 'ann.json', ('circle', ),
                           'metainfo.classes', training=False)


@pytest.mark.slow
def test_skipped_annotations_warned_and_empty_image_named(coco, tmp_path):
    """Zero-size and negative-size boxes and an unknown category_id: the
    run warns with the count per reason and per file, then an empty
    (0-byte) image fails naming the image, not with an OpenCV assertion."""
    ann = osp.join(coco, 'annotations', 'instances_train2017.json')
    content = edit_json(ann, lambda c: None)
    anns = content['annotations']
    assert len(anns) >= 4

    def corrupt(c):
        c['annotations'][0]['bbox'][2] = 0
        c['annotations'][1]['bbox'][3] = -4
        c['annotations'][2]['category_id'] = 99

    edit_json(ann, corrupt)
    img = osp.join(coco, 'train2017', content['images'][1]['file_name'])
    open(img, 'wb').close()
    res = train_det(coco, str(tmp_path / 'w'))
    out = res.stdout
    assert res.returncode != 0, out[-3000:]
    assert 'instances_train2017.json' in out and \
        f'the loader skips 3 of {len(anns)} annotations' in out, out[-3000:]
    assert '2 with a box of zero or negative size' in out
    assert "1 with a category_id not among the file's categories" in out
    # a user error: its message, no traceback
    assert last_error(out).startswith('error: cannot load a sample'), \
        out[-3000:]
    assert 'Traceback' not in out
    assert osp.basename(img) in last_error(out)
    assert 'empty file (0 bytes)' in last_error(out)


@pytest.mark.slow
def test_nothing_usable_left_is_an_error(coco, tmp_path):
    ann = osp.join(coco, 'annotations', 'instances_train2017.json')

    def zero_size(c):
        for a in c['annotations']:
            a['bbox'][2] = 0

    content = edit_json(ann, zero_size)
    res = train_det(coco, str(tmp_path / 'w'))
    assert res.returncode != 0
    err = last_error(res.stdout)
    assert 'need at least one array' not in res.stdout
    assert 'instances_train2017.json' in err and \
        f"none of its {len(content['annotations'])} annotations is usable" \
        in err and 'nothing left to train on' in err, res.stdout[-3000:]


@pytest.mark.slow
def test_num_classes_not_matching_dataset_is_named(coco, tmp_path):
    res = train_det(coco, str(tmp_path / 'w'), [
        'model.roi_head.bbox_head.num_classes=2'])
    assert res.returncode != 0
    err = last_error(res.stdout)
    assert 'model.roi_head.bbox_head.num_classes=2 does not match the 3 ' \
        'classes of train_dataloader.dataset' in err, res.stdout[-3000:]
    assert 'out of bounds' not in res.stdout


@pytest.mark.slow
def test_checks_hold_under_mmdet_train_py(coco, tmp_path):
    """The configs declare the data hooks, so mmdet's own tools/train.py
    stops at the same mismatch (it would fail later with an index
    error, or train a wrong head)."""
    import mmdet
    tool = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    if not osp.isfile(tool):
        pytest.skip('this mmdet installation ships no tools/train.py')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    res = subprocess.run(
        [sys.executable, tool, osp.join(DET, 'maskrcnn_fcvit_b12.py'),
         '--work-dir', str(tmp_path / 'w'), '--cfg-options',
         *det_options(coco), 'model.roi_head.mask_head.num_classes=5'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600)
    assert res.returncode != 0
    assert 'model.roi_head.mask_head.num_classes=5 does not match the 3 ' \
        'classes of train_dataloader.dataset' in last_error(res.stdout), \
        res.stdout[-3000:]


# --------------------------------------------------------------------------
# label maps
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    return generated_shapes(tmp_path_factory, 'bad_ade', 'ade20k',
                            num_train=2, num_val=2, img_size=64, seed=0)


def seg_options(root):
    opts = ['train_cfg.max_iters=1', 'train_cfg.val_interval=1',
            'model.data_preprocessor.size=(64,64)',
            'train_dataloader.batch_size=2', 'randomness.seed=0']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        split = 'training' if loader == 'train_dataloader' else 'validation'
        opts += [f'{loader}.dataset.data_root={root}',
                 f'{loader}.dataset.data_prefix.img_path=images/{split}',
                 f'{loader}.dataset.data_prefix.seg_map_path='
                 f'annotations/{split}',
                 f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    return opts


@pytest.mark.slow
def test_label_values_beyond_num_classes_named(ade, tmp_path):
    """A label map holding 9 with num_classes=4: an error naming the file,
    the value and the config key, in training and in evaluation."""
    data = str(tmp_path / 'ade')
    shutil.copytree(ade, data)
    for split in ('training', 'validation'):
        seg = osp.join(data, 'annotations', split, '000001.png')
        labels = cv2.imread(seg, cv2.IMREAD_UNCHANGED)
        labels[:4, :4] = 9
        cv2.imwrite(seg, labels)
    from mmengine.runner import save_checkpoint
    from mmseg.apis import init_model
    cfg = Config.fromfile(SEG_DEMO)
    model = init_model(cfg, device='cpu')
    ckpt = str(tmp_path / 'model.pth')
    save_checkpoint(dict(state_dict=model.state_dict(), meta={}), ckpt)
    # training and evaluation side by side (two processes)
    with ThreadPoolExecutor(1) as pool:
        training = pool.submit(
            run_tool, 'train.py', SEG_DEMO, '--work-dir',
            str(tmp_path / 'w'), '--cfg-options', *seg_options(data))
        res = run_tool('test.py', SEG_DEMO, ckpt, '--work-dir',
                       str(tmp_path / 't'), '--cfg-options',
                       *seg_options(data))
        train_res = training.result()
    assert res.returncode != 0
    err = last_error(res.stdout)
    assert 'validation/000001.png' in err and 'holds values [9]' in err and \
        '(test_dataloader)' in err, res.stdout[-3000:]
    assert train_res.returncode != 0
    err = last_error(train_res.stdout)
    assert 'training/000001.png' in err and 'holds values [9]' in err and \
        'model.decode_head.num_classes=4' in err and \
        '(train_dataloader)' in err, train_res.stdout[-3000:]


# --------------------------------------------------------------------------
# misspelt config keys
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_misspelt_top_level_key_warns(tmp_path):
    cfg = tmp_path / 'typo.py'
    cfg.write_text(textwrap.dedent(f'''
        _base_ = [{osp.join(DET, 'maskrcnn_fcvit_b12.py')!r}]
        optim_wraper = dict(optimizer=dict(lr=1e-5))
        paramscheduler = []
        my_helper_setting = 3
    '''))
    res = run_tool('train.py', str(cfg), '--work-dir', str(tmp_path / 'w'),
                   '--cfg-options', 'train_dataloader.dataset.data_root=' +
                   str(tmp_path / 'nowhere'))
    out = res.stdout
    # the run goes on (and here fails at the missing data, before building)
    assert 'annotation file not found' in out, out[-3000:]
    assert "unknown top-level key 'optim_wraper' (ignored); did you mean " \
        "'optim_wrapper'?" in out
    assert "'paramscheduler' (ignored); did you mean 'param_scheduler'" in out
    assert 'my_helper_setting' not in out


@pytest.mark.slow
def test_shipped_configs_have_no_misspelt_keys():
    """No false alarm on our configs or on those of the libraries that
    they inherit from (nor on 180 of the libraries' own configs, tried
    once by hand)."""
    import glob
    paths = [path for task in ('detection', 'segmentation', 'classification')
             for path in glob.glob(osp.join(ROOT, 'configs', task, '*.py'))]
    assert len(paths) > 10
    for path in paths:
        cfg = Config.fromfile(path)
        assert misspelt_keys(cfg) == [], path
        # and they declare the run's hooks, for any train.py / test.py (the
        # one mechanism that puts them in a run)
        hooks = {h['type'] for h in cfg.get('custom_hooks', [])}
        assert {'SafeResumeHook', 'RandomStateHook', 'FiniteLossHook',
                'DataCheckHook', 'DataLoaderWorkersHook'} <= hooks, path
        if osp.basename(osp.dirname(path)) != '_base_':  # a whole config
            assert cfg.default_hooks.checkpoint.type == \
                'SafeCheckpointHook', path
