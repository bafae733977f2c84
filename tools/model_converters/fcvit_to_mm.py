#!/usr/bin/env python
# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Convert a reference FCViT checkpoint to this project's layout.

    python tools/model_converters/fcvit_to_mm.py SRC DST

* a classification checkpoint (``norm`` and ``head`` present) becomes an
  mmpretrain ``ImageClassifier`` state dict: ``backbone.*`` and
  ``head.fc.*``, loadable by the classification configs with ``load_from``
  or ``tools/test.py CONFIG DST``;
* a dense (detection / segmentation) checkpoint becomes ``backbone.*``.

The source is read with torch's weights-only loader (no code from the file
runs); the destination holds ``{'state_dict': ..., 'meta': ...}``.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))

from fcvit_mm.models.checkpoint import (  # noqa: E402
    convert_reference_state_dict, extract_state_dict, is_reference_layout,
    safe_load)


def convert(src: str) -> dict:
    sd = extract_state_dict(safe_load(src), src)
    sd = {k[len('backbone.'):] if k.startswith('backbone.') else k: v
          for k, v in sd.items()}
    if not is_reference_layout(sd):
        raise SystemExit(f'{src!r} is not a reference FCViT checkpoint (no '
                         f'"network.*" keys); nothing to convert')
    backbone, head = convert_reference_state_dict(sd)
    out = {f'backbone.{k}': v for k, v in backbone.items()}
    out.update({f'head.fc.{k}': v for k, v in head.items()})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='reference checkpoint (.pth / .pth.tar)')
    parser.add_argument('dst', help='output path')
    args = parser.parse_args(argv)
    state_dict = convert(args.src)
    kind = 'classification' if any(
        k.startswith('head.fc.') for k in state_dict) else 'dense'
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save(
        dict(state_dict=state_dict,
             meta=dict(converted_from=os.path.basename(args.src),
                       layout=kind)), args.dst)
    print(f'wrote {len(state_dict)} tensors ({kind} layout) to {args.dst}')


if __name__ == '__main__':
    main()
