# Mask R-CNN + FPN, FCViT-B12 backbone, COCO instance segmentation, 1x.
# The reference's recipe: AdamW lr 2e-4, weight decay 1e-4, 8 GPUs x 4 images.
# Reference COCO val2017: box AP 42.3, mask AP 38.6.
_base_ = [
    './_base_/models/maskrcnn_fcvit_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/adamw_1x.py',
    './_base_/default_runtime.py',
]
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

# ImageNet-1K FCViT-B12 weights (path or URL). The reference's published
# checkpoint works as it is, and so does one converted by
# tools/model_converters/fcvit_to_mm.py. None trains from scratch (a warning
# is logged). Override: --cfg-options model.backbone.init_cfg.checkpoint=PATH
pretrained = None

model = dict(
    backbone=dict(
        arch='b12',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
