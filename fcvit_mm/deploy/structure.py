# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Nested tuples / lists of tensors <-> flat tensor lists.

An ONNX graph has a flat list of inputs and outputs; the libraries' modules
take and return nested sequences (a detector's features are a tuple of
levels, a dense head returns a list of class scores per level and a list of
box deltas per level). A *spec* records the nesting in JSON-friendly form:
``None`` for a tensor, ``['tuple' | 'list', [child specs]]`` for a
sequence, so that the runtime can rebuild exactly what the module returned.
"""
from typing import Any, List, Tuple

import torch


def flatten(obj: Any) -> Tuple[List[torch.Tensor], Any]:
    """``obj`` (a tensor or nested tuples / lists of tensors) -> (tensors in
    depth-first order, spec)."""
    if isinstance(obj, torch.Tensor):
        return [obj], None
    if isinstance(obj, (tuple, list)):
        tensors, specs = [], []
        for item in obj:
            t, s = flatten(item)
            tensors += t
            specs.append(s)
        return tensors, ['tuple' if isinstance(obj, tuple) else 'list', specs]
    raise TypeError(f'can only flatten tensors and tuples / lists of them, '
                    f'got {type(obj).__name__}')


def unflatten(tensors: List[Any], spec: Any) -> Any:
    """The inverse of :func:`flatten`: rebuild the nesting of ``spec`` from
    ``tensors`` (all of them must be used)."""
    tensors = list(tensors)
    out = _take(tensors, spec)
    if tensors:
        raise ValueError(f'{len(tensors)} tensors left over after rebuilding '
                         f'the structure {spec}')
    return out


def _take(tensors: List[Any], spec: Any) -> Any:
    if spec is None:
        if not tensors:
            raise ValueError('too few tensors for the structure')
        return tensors.pop(0)
    kind, children = spec
    items = [_take(tensors, child) for child in children]
    return tuple(items) if kind == 'tuple' else items


def count(spec: Any) -> int:
    """Number of tensors in a structure."""
    if spec is None:
        return 1
    return sum(count(child) for child in spec[1])
