"""For tests/test_compile_train.py, imported by a config
(``custom_imports``) in the process of a library's ``tools/train.py``: a
``torch.compile`` backend, ``fcvit_count_eager``, that records every
graph it is given (the training iteration, whether the graph holds code of
the FCViT backbone) as a JSON line in ``$FCVIT_COMPILE_LOG``, then runs it
as captured (dynamo's guards and recompiles are the backend's business only
after capture, so capture alone is what the count needs); and
``CompileCountHook``, which tells it the iteration and records each batch's
input sizes."""
import json
import os

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

BACKBONE_CODE = os.path.join('models', 'backbones', 'fcvit')
_state = dict(iter=-1)


def _log(**record):
    with open(os.environ['FCVIT_COMPILE_LOG'], 'a') as f:
        f.write(json.dumps(record) + '\n')


def _holds_backbone(gm) -> bool:
    return any(BACKBONE_CODE in (node.meta.get('stack_trace') or '')
               for node in gm.graph.nodes)


@torch._dynamo.register_backend(name='fcvit_count_eager')
def fcvit_count_eager(gm, example_inputs):
    _log(kind='graph', iter=_state['iter'], backbone=_holds_backbone(gm))
    return gm.forward


@HOOKS.register_module(force=True)
class CompileCountHook(Hook):
    """Sets the iteration the backend records; logs the batch's sizes."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        _state['iter'] = runner.iter
        sizes = [list(t.shape[-2:]) for t in data_batch['inputs']]
        _log(kind='batch', iter=runner.iter, sizes=sizes)
