# COCO object detection (boxes), mmdet's standard pipeline (1333 x 800
# resize, horizontal flip), 2 images per GPU (mmdet's default).
_base_ = 'mmdet::_base_/datasets/coco_detection.py'
