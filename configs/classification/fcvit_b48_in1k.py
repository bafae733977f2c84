# FCViT-B48 on ImageNet-1K: fcvit_b24_in1k.py's recipe (test crop ratio
# 0.95) with drop-path 0.2.
# 51,477,032 parameters; reference top-1 83.6.
# The reference's weights, and how to evaluate them: docs/classification.md,
# "The reference's weights".
_base_ = './fcvit_b24_in1k.py'

model = dict(backbone=dict(arch='b48', drop_path_rate=0.2))
