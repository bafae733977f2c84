# COCO instance segmentation (boxes and masks), mmdet's standard pipeline
# (1333 x 800 resize, horizontal flip), 4 images per GPU as the reference.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

train_dataloader = dict(batch_size=4, num_workers=4)
