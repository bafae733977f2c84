# RetinaNet + FPN, FCViT-B24 backbone, COCO detection, 1x. Same recipe as
# retinanet_fcvit_b12.py.
_base_ = './retinanet_fcvit_b12.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

# ImageNet-1K FCViT-B24 weights (path or URL). Take the reference's published
# fcvit_b24 checkpoint: the .pth.tar of the ImageNet-1K download table of
# the reference README (https://github.com/ma-xu/FCViT; this project does not
# record the asset's file name). It works as downloaded, and so does the file
# converted by tools/model_converters/fcvit_to_mm.py. None trains the backbone
# from scratch (a warning is logged). With the file saved as
# checkpoints/fcvit_b24.pth.tar:
#   python tools/train.py configs/detection/retinanet_fcvit_b24.py \
#       --cfg-options \
#       model.backbone.init_cfg.checkpoint=checkpoints/fcvit_b24.pth.tar
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
