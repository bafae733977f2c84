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

# ImageNet-1K FCViT-B12 weights (path or URL). Take the reference's published
# fcvit_b12 checkpoint: the .pth.tar of the ImageNet-1K download table of
# the reference README (https://github.com/ma-xu/FCViT; this project does not
# record the asset's file name). It works as downloaded, and so does the file
# converted by tools/model_converters/fcvit_to_mm.py. None trains the backbone
# from scratch (a warning is logged). With the file saved as
# checkpoints/fcvit_b12.pth.tar:
#   python tools/train.py configs/detection/maskrcnn_fcvit_b12.py \
#       --cfg-options \
#       model.backbone.init_cfg.checkpoint=checkpoints/fcvit_b12.pth.tar
pretrained = None

model = dict(
    backbone=dict(
        arch='b12',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
