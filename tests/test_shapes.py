"""The synthetic-shapes generator: determinism, re-use, bad input, and that
pycocotools and the mmdet / mmseg / mmpretrain dataset classes read the
three layouts it writes."""
import json
import os
import os.path as osp

import numpy as np
import pytest

from fcvit_mm.datasets import SHAPES_CLASSES, make_shapes_dataset
from helpers import load_tool

SMALL = dict(num_train=6, num_val=3, img_size=64)


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp('coco'), 'coco',
                               num_train=12, num_val=4, img_size=64)


@pytest.mark.parametrize('fmt', ['coco', 'ade20k', 'imagenet'])
def test_same_seed_same_files(tmp_path, fmt):
    a = make_shapes_dataset(tmp_path / 'a', fmt, seed=3, **SMALL)
    b = make_shapes_dataset(tmp_path / 'b', fmt, seed=3, **SMALL)
    c = make_shapes_dataset(tmp_path / 'c', fmt, seed=4, **SMALL)
    fa, fb, fc = _files(a['root']), _files(b['root']), _files(c['root'])
    assert len(fa) > SMALL['num_train'] + SMALL['num_val']
    assert fa == fb
    images = [k for k in fa if k.endswith(('.jpg', '.JPEG'))]
    assert len(images) == SMALL['num_train'] + SMALL['num_val']
    # another seed draws other images
    assert sum(fa[k] == fc.get(k) for k in images) == 0


def test_val_split_independent_of_num_train(tmp_path):
    a = make_shapes_dataset(tmp_path / 'a', 'ade20k', num_train=2,
                            num_val=3, img_size=48)
    b = make_shapes_dataset(tmp_path / 'b', 'ade20k', num_train=5,
                            num_val=3, img_size=48)
    assert _files(a['val_img_dir']) == _files(b['val_img_dir'])
    assert _files(a['val_seg_dir']) == _files(b['val_seg_dir'])


def test_coco_and_ade20k_draw_the_same_scenes(tmp_path):
    import cv2
    from pycocotools.coco import COCO
    a = make_shapes_dataset(tmp_path / 'coco', 'coco', **SMALL)
    b = make_shapes_dataset(tmp_path / 'ade', 'ade20k', **SMALL)
    coco_imgs = sorted(_files(a['val_img_dir']).values())
    ade_imgs = sorted(_files(b['val_img_dir']).values())
    assert coco_imgs == ade_imgs
    # the instance polygons paint exactly the semantic label maps
    gt = COCO(a['val_ann_file'])
    for img_id in gt.getImgIds():
        painted = np.zeros((64, 64), np.uint8)
        for ann in gt.loadAnns(gt.getAnnIds(imgIds=[img_id])):
            mask = gt.annToMask(ann) > 0
            assert not painted[mask].any()  # instances do not overlap
            painted[mask] = ann['category_id']
        label = cv2.imread(
            osp.join(b['val_seg_dir'], f'{img_id:06d}.png'),
            cv2.IMREAD_UNCHANGED)
        assert (painted == label).all()


def test_reuse_and_regenerate(tmp_path):
    root = tmp_path / 'ds'
    first = make_shapes_dataset(root, 'ade20k', **SMALL)
    assert first['generated']
    marker = osp.join(first['train_img_dir'], '000001.jpg')
    mtime = os.stat(marker).st_mtime_ns
    again = make_shapes_dataset(root, 'ade20k', **SMALL)
    assert not again['generated']
    assert os.stat(marker).st_mtime_ns == mtime
    # other arguments: regenerated, no stale files from the bigger set
    fewer = make_shapes_dataset(root, 'ade20k', num_train=2, num_val=1,
                                img_size=64)
    assert fewer['generated']
    assert len(os.listdir(fewer['train_img_dir'])) == 2
    assert len(os.listdir(fewer['train_seg_dir'])) == 2


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match='fmt'):
        make_shapes_dataset(tmp_path / 'x', 'voc')
    with pytest.raises(ValueError, match='num_train'):
        make_shapes_dataset(tmp_path / 'x', 'coco', num_train=-1)
    with pytest.raises(ValueError, match='img_size'):
        make_shapes_dataset(tmp_path / 'x', 'coco', img_size=8)
    with pytest.raises(ValueError, match='size_range'):
        make_shapes_dataset(tmp_path / 'x', 'coco', size_range=(0.5, 0.2))
    with pytest.raises(ValueError, match='num_objects'):
        make_shapes_dataset(tmp_path / 'x', 'coco', num_objects=(0, 2))
    # a folder with real data in it is not overwritten
    os.makedirs(tmp_path / 'real' / 'train2017')
    with pytest.raises(FileExistsError, match='not made by'):
        make_shapes_dataset(tmp_path / 'real', 'coco', **SMALL)


def test_coco_json_with_pycocotools(coco):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO(coco['val_ann_file'])
    assert [c['name'] for c in gt.loadCats(gt.getCatIds())] == list(
        SHAPES_CLASSES)
    assert gt.getCatIds() == [1, 2, 3]
    assert len(gt.getImgIds()) == 4
    anns = gt.loadAnns(gt.getAnnIds())
    assert len(anns) >= 4
    for ann in anns:
        img = gt.loadImgs(ann['image_id'])[0]
        assert osp.isfile(osp.join(coco['val_img_dir'], img['file_name']))
        assert ann['iscrowd'] == 0
        mask = gt.annToMask(ann)
        assert mask.shape == (img['height'], img['width'])
        # the polygon gives back the visible pixels: box and area agree
        ys, xs = np.nonzero(mask)
        assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                               ys.max() - ys.min() + 1]
        assert mask.sum() == ann['area']
    # ground truth as detections: a perfect score for COCOeval
    dets = [dict(image_id=a['image_id'], category_id=a['category_id'],
                 bbox=a['bbox'], score=1.0) for a in anns]
    ev = COCOeval(gt, gt.loadRes(dets), 'bbox')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP@0.5


def test_coco_with_mmdet(coco):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    ds = CocoDataset(
        data_root=coco['root'],
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), metainfo=dict(
            classes=SHAPES_CLASSES),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True,
                       with_mask=True),
                  dict(type='PackDetInputs')])
    assert len(ds) == 12
    with open(coco['train_ann_file']) as f:
        n_ann = len(json.load(f)['annotations'])
    assert sum(len(ds.get_data_info(i)['instances'])
               for i in range(len(ds))) == n_ann
    sample = ds[0]['data_samples']
    inst = sample.gt_instances
    assert len(inst) > 0
    assert inst.labels.min() >= 0 and inst.labels.max() < 3
    masks = inst.masks.to_ndarray()
    assert masks.shape[1:] == (64, 64)
    assert (masks.reshape(len(inst), -1).sum(1) > 0).all()


def test_ade20k_with_mmseg(tmp_path):
    from mmseg.datasets import ADE20KDataset, BaseSegDataset
    from mmseg.utils import register_all_modules
    register_all_modules()
    info = make_shapes_dataset(tmp_path, 'ade20k', **SMALL)
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', reduce_zero_label=True),
                dict(type='PackSegInputs')]
    prefix = dict(img_path='images/validation',
                  seg_map_path='annotations/validation')
    # the ADE20K class itself reads the layout (its 150 names stay)
    ade = ADE20KDataset(data_root=info['root'], data_prefix=prefix,
                        pipeline=pipeline)
    assert len(ade) == SMALL['num_val']
    # with our class names: the generic dataset with ADE20K's conventions
    ds = BaseSegDataset(data_root=info['root'], data_prefix=prefix,
                        img_suffix='.jpg', seg_map_suffix='.png',
                        reduce_zero_label=True,
                        metainfo=dict(classes=SHAPES_CLASSES),
                        pipeline=pipeline)
    assert ds.metainfo['classes'] == SHAPES_CLASSES
    assert len(ds) == SMALL['num_val']
    values = set()
    for i in range(len(ds)):
        seg = ds[i]['data_samples'].gt_sem_seg.data.numpy()
        assert seg.shape[-2:] == (64, 64)
        assert (seg == ade[i]['data_samples'].gt_sem_seg.data.numpy()).all()
        values |= set(np.unique(seg).tolist())
    # background became 255 (ignored); shapes 0..2
    assert 255 in values
    assert values - {255} and values - {255} <= {0, 1, 2}


def test_imagenet_with_mmpretrain(tmp_path):
    from mmpretrain.datasets import CustomDataset
    info = make_shapes_dataset(tmp_path, 'imagenet', num_train=9, num_val=6,
                               img_size=48)
    folders = CustomDataset(data_root=info['root'], data_prefix='train',
                            pipeline=[])
    assert folders.CLASSES == SHAPES_CLASSES
    assert len(folders) == 9
    listed = CustomDataset(data_root=info['root'], ann_file='meta/val.txt',
                           data_prefix='val', classes=SHAPES_CLASSES,
                           pipeline=[])
    assert len(listed) == 6
    for i in range(len(listed)):
        item = listed.get_data_info(i)
        assert osp.isfile(item['img_path'])
        folder = osp.basename(osp.dirname(item['img_path']))
        assert SHAPES_CLASSES[item['gt_label']] == folder


def test_command_line(tmp_path, capsys):
    tool = load_tool('dataset_converters/make_shapes')
    results = tool.main([str(tmp_path), '--format', 'coco', 'imagenet',
                         '--num-train', '3', '--num-val', '2',
                         '--img-size', '48', '--seed', '5'])
    assert [r['root'] for r in results] == [str(tmp_path / 'coco'),
                                            str(tmp_path / 'imagenet')]
    with open(tmp_path / 'coco' / 'annotations' /
              'instances_val2017.json') as f:
        assert len(json.load(f)['images']) == 2
    # same as the function with the same arguments
    direct = make_shapes_dataset(tmp_path / 'direct', 'coco', num_train=3,
                                 num_val=2, img_size=48, seed=5)
    assert _files(direct['root']) == _files(results[0]['root'])
    assert 'written' in capsys.readouterr().out
