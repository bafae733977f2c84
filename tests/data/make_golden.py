"""Write tests/data/fcvit_mini_golden.pth with the reference implementation
(see README.md next to this file). Needs the reference's ``models/fcvit.py``
and what it imports (timm 0.6, einops); not run by the tests::

    PYTHONPATH=DIR_WITH_TIMM_AND_EINOPS python tests/data/make_golden.py \\
        --reference FCViT/models/fcvit.py --commit COMMIT
"""
import argparse
import importlib.util
import os.path as osp
import sys

import torch

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(HERE))  # tests/: golden_data

from golden_data import (FORMS, digest, draw_input,  # noqa: E402
                         draw_state_dict)

ARCH = dict(layers=[1, 1, 2, 1], embed_dims=[32, 64, 96, 128],
            mlp_ratios=[8, 8, 4, 4])
NUM_CLASSES = 10
INPUT_SHAPE = (2, 3, 96, 128)  # not square, on purpose
SEEDS = dict(input=0, classification=1, dense=2)
REPOSITORY = 'https://github.com/ma-xu/FCViT'


def reference_models(path: str):
    """(classifier, dense backbone) of the reference at the mini arch, with
    the settings of its published variants."""
    spec = importlib.util.spec_from_file_location('reference_fcvit', path)
    ref = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = ref  # timm's registry looks the module up
    spec.loader.exec_module(ref)
    ref.fcvit_tiny()  # sets the shared block settings, as every variant

    def build(**kwargs):
        return ref.BaseFormer(ARCH['layers'], embed_dims=ARCH['embed_dims'],
                              mlp_ratios=ARCH['mlp_ratios'],
                              downsamples=[True] * 4, params=ref.params,
                              **kwargs)

    return dict(classification=build(num_classes=NUM_CLASSES),
                dense=build(fork_feat=True))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reference', required=True,
                   help="the reference repository's models/fcvit.py")
    p.add_argument('--commit', required=True,
                   help='the commit of the reference it is from')
    p.add_argument('--out', default=osp.join(HERE, 'fcvit_mini_golden.pth'))
    args = p.parse_args()
    x = draw_input(SEEDS['input'], INPUT_SHAPE)
    out = dict(arch=ARCH, num_classes=NUM_CLASSES,
               reference=f'{REPOSITORY} {args.commit} models/fcvit.py, '
               f'torch {torch.__version__}',
               input_seed=SEEDS['input'], input_shape=list(INPUT_SHAPE),
               digests=dict(input=digest([x])))
    for form, model in reference_models(args.reference).items():
        layout = [(k, list(v.shape), str(v.dtype).replace('torch.', ''))
                  for k, v in model.state_dict().items()]
        state = draw_state_dict(layout, SEEDS[form])
        model.load_state_dict(state, strict=True)
        entry = dict(seed=SEEDS[form], layout=layout)
        for mode in ('eval', 'train'):
            model.train(mode == 'train')
            with torch.no_grad():
                y = model(x)
            entry[f'{mode}_output'] = y  # a list of 4 maps, or the logits
        out[form] = entry
        out['digests'][form] = digest(list(state.values()))
    assert set(out) >= set(FORMS)
    torch.save(out, args.out)
    print(f'wrote {args.out} ({osp.getsize(args.out)} bytes)')


if __name__ == '__main__':
    main()
