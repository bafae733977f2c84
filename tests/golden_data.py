"""The golden file of the reference implementation (tests/data/README.md):
its weights and input are drawn from seeds (numpy's legacy
``RandomState``, whose streams numpy keeps fixed), so the file holds the
seeds, the layout, a digest of what they draw and the reference's outputs.

:func:`load_golden` returns the same dict as the reference wrote it:
``arch``, ``input``, ``num_classes`` and, per form (``classification``,
``dense``), ``state_dict``, ``eval_output`` and ``train_output``.
``tests/data/make_golden.py`` writes the file with the reference code.
"""
import hashlib
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

FORMS = ('classification', 'dense')


def _drawn(rs: np.random.RandomState, key: str,
           shape: Tuple[int, ...]) -> np.ndarray:
    """One entry, drawn as tests/data/README.md's table says (a 1-D
    ``weight`` is a norm's)."""
    name = key.rsplit('.', 1)[-1]
    if name == 'running_mean':
        return rs.normal(0.0, 0.2, shape)
    if name == 'running_var':
        return rs.uniform(0.5, 1.5, shape)
    if name.startswith('layer_scale'):
        return rs.uniform(0.5, 1.0, shape)
    if name == 'rescale_weight' or (name == 'weight' and len(shape) == 1):
        return 1.0 + rs.normal(0.0, 0.2, shape)
    if name == 'weight':  # conv or linear
        fan_in = int(np.prod(shape[1:]))
        return rs.normal(0.0, fan_in**-0.5, shape)
    if name in ('bias', 'rescale_bias'):  # of a norm or of a conv / linear
        return rs.normal(0.0, 0.1, shape)
    raise ValueError(f'golden: no distribution for {key!r}')


def draw_state_dict(layout: Sequence[Tuple[str, Sequence[int], str]],
                    seed: int) -> 'OrderedDict[str, torch.Tensor]':
    """The state dict of ``layout`` (``(key, shape, dtype)`` in the
    model's order), entries drawn in that order from ``seed``."""
    rs = np.random.RandomState(seed)
    state = OrderedDict()
    for key, shape, dtype in layout:
        shape = tuple(shape)
        if key.endswith('num_batches_tracked'):
            state[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        value = _drawn(rs, key, shape)
        state[key] = torch.from_numpy(
            np.asarray(value, dtype=np.float64).astype(np.float32))
    return state


def draw_input(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """A standard normal float32 batch."""
    rs = np.random.RandomState(seed)
    return torch.from_numpy(rs.standard_normal(tuple(shape)).astype(
        np.float32))


def digest(tensors: List[torch.Tensor]) -> str:
    """sha256 over the tensors' bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def load_golden(path: str) -> Dict:
    """The golden file with its weights and input drawn again, each checked
    against the digest written with the outputs."""
    raw = torch.load(path, weights_only=True)
    golden = dict(arch=raw['arch'], num_classes=raw['num_classes'],
                  reference=raw['reference'])
    golden['input'] = draw_input(raw['input_seed'], raw['input_shape'])
    parts = [('input', [golden['input']])]
    for form in FORMS:
        stored = raw[form]
        state = draw_state_dict(stored['layout'], stored['seed'])
        golden[form] = dict(state_dict=state,
                            eval_output=stored['eval_output'],
                            train_output=stored['train_output'])
        parts.append((form, list(state.values())))
    for name, tensors in parts:
        want = raw['digests'][name]
        if digest(tensors) != want:
            raise RuntimeError(
                f'{path}: the {name} drawn from its seed is not what the '
                'reference outputs were computed from (digest mismatch: has '
                "numpy's legacy RandomState stream changed?)")
    return golden
