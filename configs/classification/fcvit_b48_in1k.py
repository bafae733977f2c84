# FCViT-B48 on ImageNet-1K: fcvit_b24_in1k.py's recipe (test crop ratio
# 0.95) with drop-path 0.2.
# 51,477,032 parameters; reference top-1 83.6.
# Reference weights: the reference's published fcvit_b48 ImageNet-1K
# checkpoint, the .pth.tar of the download table of the reference README
# (https://github.com/ma-xu/FCViT; this project does not record the asset's
# file name). Saved as checkpoints/fcvit_b48.pth.tar, evaluate it with:
#   python tools/model_converters/fcvit_to_mm.py \
#       checkpoints/fcvit_b48.pth.tar checkpoints/fcvit_b48_mm.pth
#   python tools/test.py configs/classification/fcvit_b48_in1k.py \
#       checkpoints/fcvit_b48_mm.pth
_base_ = './fcvit_b24_in1k.py'
custom_imports = dict(imports=['fcvit_mm'], allow_failed_imports=False)

model = dict(backbone=dict(arch='b48', drop_path_rate=0.2))
