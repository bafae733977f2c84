# FCViT-tiny on ImageNet-1K: fcvit_b12_in1k.py's recipe with the tiny widths
# (32, 64, 160, 320) and depths (3, 3, 5, 2); drop-path 0.1, test crop 0.9.
# 4,784,752 parameters; reference top-1 74.9.
# Reference weights: the reference's published fcvit_tiny ImageNet-1K
# checkpoint, the .pth.tar of the download table of the reference README
# (https://github.com/ma-xu/FCViT; this project does not record the asset's
# file name). Saved as checkpoints/fcvit_tiny.pth.tar, evaluate it with:
#   python tools/model_converters/fcvit_to_mm.py \
#       checkpoints/fcvit_tiny.pth.tar checkpoints/fcvit_tiny_mm.pth
#   python tools/test.py configs/classification/fcvit_tiny_in1k.py \
#       checkpoints/fcvit_tiny_mm.pth
_base_ = './fcvit_b12_in1k.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1),
    head=dict(in_channels=320))
