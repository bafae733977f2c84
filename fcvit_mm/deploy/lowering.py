# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Per-runtime lowering of an exported graph, applied in memory when a
runtime loads it (the files on disk stay as exported).

The export writes each one-group GroupNorm of FCViT as one
``LayerNormalization`` over every axis but the batch (``axis=1``), which
OpenVINO runs as one MVN in its blocked layouts. ONNX Runtime's CPU kernel
for that op is slow on such long rows: on this project's machine 4.4 ms for
a (8, 64, 56, 56) tensor against 1.2 ms for the same normalisation as an
``InstanceNormalization`` of the (8, 1, C*H*W) view (1.7 ms with the affine
as a Mul and an Add). :func:`layer_norm_to_instance_norm` rewrites the
graph that ONNX Runtime gets accordingly: the same function, exact up to
float rounding (``fcvit_mm.deploy.backends.OrtSession`` applies it).
"""
from typing import Any, Dict, Optional

import numpy as np


def _constants(graph) -> Dict[str, Any]:
    """The graph's initializers and ``Constant`` node values by name, as
    TensorProtos (:func:`_array` turns the few that are looked at into
    arrays; the model's weights are not converted)."""
    from onnx import helper
    tensors: Dict[str, Any] = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == 'Constant' and node.attribute[0].name == 'value':
            tensors[node.output[0]] = helper.get_attribute_value(
                node.attribute[0])
    return tensors


def _array(tensors: Dict[str, Any], name: str) -> Optional[np.ndarray]:
    from onnx import numpy_helper
    tensor = tensors.get(name)
    return None if tensor is None else numpy_helper.to_array(tensor)


def _all_equal(arr: Optional[np.ndarray], value: float) -> bool:
    """Whether ``arr`` is a constant (not None) all of whose elements are
    ``value``."""
    return arr is not None and bool(np.all(arr == value))


def layer_norm_to_instance_norm(model) -> int:
    """Rewrite, in place, every ``LayerNormalization`` with ``axis=1`` of
    ``model`` (an ``onnx.ModelProto``) whose only output is ``Y`` as
    ``Reshape(X, [0, 1, -1])`` -> ``InstanceNormalization`` (scale 1, shift
    0, same epsilon) -> ``Reshape`` back to ``Shape(X)`` -> ``Mul`` by the
    scale -> ``Add`` of the shift (each left out where it is a constant 1 /
    0). Returns how many were rewritten."""
    from onnx import helper, numpy_helper
    graph = model.graph
    tensors = _constants(graph)
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a)
                 for a in node.attribute}
        outputs = [o for o in node.output if o]
        if (node.op_type != 'LayerNormalization'
                or node.domain not in ('', 'ai.onnx')
                or attrs.get('axis', -1) != 1 or len(outputs) != 1
                or node.output[0] != outputs[0]):
            nodes.append(node)
            continue
        x, scale = node.input[0], node.input[1]
        bias = node.input[2] if len(node.input) > 2 else ''
        eps = float(attrs.get('epsilon', 1e-5))
        p = f'{node.name or "layer_norm"}/as_instance_norm/{count}'
        scale_array = _array(tensors, scale)
        dtype = np.float32 if scale_array is None else scale_array.dtype
        graph.initializer.extend([
            numpy_helper.from_array(np.array([0, 1, -1], np.int64),
                                    f'{p}/rows'),
            numpy_helper.from_array(np.ones(1, dtype), f'{p}/one'),
            numpy_helper.from_array(np.zeros(1, dtype), f'{p}/zero'),
        ])
        steps = [
            helper.make_node('Reshape', [x, f'{p}/rows'], [f'{p}/r']),
            helper.make_node('InstanceNormalization',
                             [f'{p}/r', f'{p}/one', f'{p}/zero'],
                             [f'{p}/n'], epsilon=eps),
            helper.make_node('Shape', [x], [f'{p}/shape']),
            helper.make_node('Reshape', [f'{p}/n', f'{p}/shape'],
                             [f'{p}/y']),
        ]
        y = f'{p}/y'
        if not _all_equal(scale_array, 1.0):
            steps.append(helper.make_node('Mul', [y, scale], [f'{p}/m']))
            y = f'{p}/m'
        if bias and not _all_equal(_array(tensors, bias), 0.0):
            steps.append(helper.make_node('Add', [y, bias], [f'{p}/a']))
            y = f'{p}/a'
        steps[-1].output[0] = node.output[0]
        for i, step in enumerate(steps):
            step.name = f'{p}/{i}'
        nodes.extend(steps)
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        _drop_unused_constants(graph)
    return count


def _drop_unused_constants(graph) -> None:
    """Remove the initializers and ``Constant`` nodes that no node reads
    any more (a scale of ones or a shift of zeros left out above), which
    ONNX Runtime would otherwise warn about one by one."""
    used = {i for n in graph.node for i in n.input}
    used.update(o.name for o in graph.output)
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node
             if n.op_type != 'Constant' or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(nodes)
