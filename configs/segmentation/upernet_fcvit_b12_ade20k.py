# UperNet, FCViT-B12 backbone, ADE20K, 512 x 512 crops, the standard 160k
# schedule (AdamW lr 6e-5, weight decay 0.01 except norms / biases / 1-D
# parameters, 1500-iteration warm-up, poly power 1.0), 8 GPUs x 2 images,
# drop-path 0.2. The reference publishes no UperNet result.
_base_ = [
    './_base_/models/upernet_fcvit.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/upernet_adamw_160k.py',
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
#   python tools/train.py configs/segmentation/upernet_fcvit_b12_ade20k.py \
#       --cfg-options \
#       model.backbone.init_cfg.checkpoint=checkpoints/fcvit_b12.pth.tar
pretrained = None

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='b12',
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
train_dataloader = dict(batch_size=2)
