# UperNet, FCViT-B24 backbone, ADE20K: same recipe as
# upernet_fcvit_b12_ade20k.py with drop-path 0.3 (as Swin-T / ConvNeXt-T of
# similar size use 0.3 / 0.4).
_base_ = './upernet_fcvit_b12_ade20k.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

# ImageNet-1K FCViT-B24 weights (path or URL). Take the reference's published
# fcvit_b24 checkpoint: the .pth.tar of the ImageNet-1K download table of
# the reference README (https://github.com/ma-xu/FCViT; this project does not
# record the asset's file name). It works as downloaded, and so does the file
# converted by tools/model_converters/fcvit_to_mm.py. None trains the backbone
# from scratch (a warning is logged). With the file saved as
# checkpoints/fcvit_b24.pth.tar:
#   python tools/train.py configs/segmentation/upernet_fcvit_b24_ade20k.py \
#       --cfg-options \
#       model.backbone.init_cfg.checkpoint=checkpoints/fcvit_b24.pth.tar
pretrained = None

model = dict(
    backbone=dict(
        arch='b24',
        drop_path_rate=0.3,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
