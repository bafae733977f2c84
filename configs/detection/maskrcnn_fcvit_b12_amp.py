# maskrcnn_fcvit_b12.py with automatic mixed precision (mmengine's
# AmpOptimWrapper, dynamic loss scaling): the same as `--amp` on the plain
# config. Needs a GPU (mmengine's AMP wrapper refuses to run on a CPU).
_base_ = './maskrcnn_fcvit_b12.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

# ImageNet-1K FCViT-B12 weights (path or URL). Take the reference's published
# fcvit_b12 checkpoint: the .pth.tar of the ImageNet-1K download table of
# the reference README (https://github.com/ma-xu/FCViT; this project does not
# record the asset's file name). It works as downloaded, and so does the file
# converted by tools/model_converters/fcvit_to_mm.py. None trains the backbone
# from scratch (a warning is logged). With the file saved as
# checkpoints/fcvit_b12.pth.tar:
#   python tools/train.py configs/detection/maskrcnn_fcvit_b12_amp.py \
#       --cfg-options \
#       model.backbone.init_cfg.checkpoint=checkpoints/fcvit_b12.pth.tar
pretrained = None

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
