# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""Where fcvit_mm goes beyond the public API of the libraries it serves, in
one place.

**Private names.** Each is used only where no public way gives the
guarantee it serves. The run layer reaches them through :func:`private` /
:func:`get_private` / :func:`set_private`, so that an upgrade which removes
one fails with a message naming it; the model's hot path, the deploy
package and the tools use theirs directly. Every one is listed here and
checked by :func:`missing_internals`: ``tests/test_layout_and_internals.py``
fails naming any that an upgrade removes, and fails naming any private name
of another library that fcvit_mm or its tools use without listing it here:

* mmengine ``Runner._resume``, ``._load_from``: ``--resume`` past
  checkpoints that do not load (the hook picks the checkpoint before
  mmengine loads it);
* mmengine ``Runner._randomness_cfg``, ``._train_dataloader``: exact resume
  with ``seed=None`` (the checkpoint's seed is taken and the loader rebuilt
  before it draws);
* mmengine ``Runner._train_loop``, ``._val_loop``, ``._test_loop``: the
  data checks look at the dataloaders of the loops the runner has built,
  without building the others (the public properties build them);
* torch ``nn.modules.batchnorm._BatchNorm``: the base of every BatchNorm
  kind (1d/2d/3d, SyncBatchNorm), which FCViT's weight init and
  ``norm_eval`` act on, as the OpenMMLab backbones do;
* torch ``ops.mkldnn._convolution_pointwise``: oneDNN's fused depthwise
  convolution (+ GELU) on the CPU, FCViT's fast path
  (``models/backbones/fcvit_ops.py``; checked where torch has oneDNN);
* mmpretrain ``_dataset_meta`` (a model attribute that mmpretrain's
  ``get_model`` sets and its ``ImageClassificationInferencer`` reads for
  the class names): an ONNX classifier's classes
  (``deploy/runtime.py``; checked where mmpretrain is installed);
* torch ``distributed_c10d._get_default_store``: naming the rank that
  stopped answering when a collective times out;
* numpy ``core.multiarray._reconstruct``, ``.scalar`` (``numpy._core`` on
  numpy 2): numpy arrays and scalars in checkpoints load with
  ``weights_only=True``.
* torch ``_dynamo.reset`` and ``_inductor.config.freezing`` (the
  compiler's own switches; torch has no public ones): the GPU check forgets
  compiled code between its models (``tools/analysis/lib/gpu_check.py``),
  and ``tools/deployment/benchmark_onnx.py --freezing`` compiles with the
  weights as constants.

**Changes to other libraries' objects.** ``import fcvit_mm`` registers
things (the model, the hooks, a file backend, the weights-only allowlist)
and changes these beyond registries, each the only way to a named
guarantee:

* :func:`register_history_buffer_pickling`: mmengine's ``HistoryBuffer``
  (in every checkpoint's message hub) pickles with a reducer registered in
  :mod:`copyreg`, without its class-level statistics methods. Without it a
  checkpoint of an mmengine run holds ``getattr(HistoryBuffer, 'min')``,
  which torch's weights-only loader (torch >= 2.6's default) refuses, so
  ``--resume`` with the libraries' own loaders fails
  (``tests/test_checkpoint_loading.py::
  test_mmengine_checkpoint_loads_weights_only``).
* :mod:`fcvit_mm.utils.model_index`: a finder on ``sys.meta_path`` that
  registers the FCViT model index with mmpretrain's ``ModelHub`` right after
  mmpretrain is imported (``get_model('fcvit-...')`` works whichever is
  imported first, and ``import fcvit_mm`` does not import mmpretrain:
  ``tests/test_packaging.py::test_get_model_by_name_either_import_order``).
  mmpretrain offers no hook for a package's own model index.
* :mod:`fcvit_mm.engine.mixed_precision`: mmengine's ``OPTIM_WRAPPERS``
  name ``'AmpOptimWrapper'`` is registered again (``force=True``) to a
  subclass that is mmengine's class on a GPU and trains in bf16 autocast
  on the CPU, where mmengine's asserts a GPU; it is what ``--amp`` of the
  libraries' own ``tools/train.py`` builds
  (``tests/test_mixed_precision.py``). When such a wrapper is built on a
  CPU with native bf16, :func:`~fcvit_mm.engine.mixed_precision.
  install_float32_islands` wraps, in memory, the methods of
  ``FLOAT32_ISLANDS`` (mmcv ``ops.nms.NMSop.forward``, mmdet
  ``SingleRoIExtractor.forward``) to run in float32 while CPU autocast is
  on (their CPU kernels refuse bf16 tensors; outside autocast they run
  unchanged), and forward hooks run a strided ``nn.Conv2d`` of the trained
  model in float32 on a map one pixel high (torch 2.14's bf16 kernel of
  its weight gradient reads memory it never wrote).

**The onedl-* stack** (:func:`stack`): the maintained continuation of the
OpenMMLab packages installs the same modules under other distribution
names (onedl-mmengine, onedl-mmsegmentation, ...). Two more changes, each
made only where it applies:

* :func:`register_config_scopes`: mmengine finds the package of a config
  scope (``mmseg::``) by its distribution name (mmengine's public
  ``mmengine.config.utils.MODULE2PACKAGE``: ``'mmseg'`` ->
  ``'mmsegmentation'``); where that distribution is not installed but the
  module is, the scope is pointed at the module, which mmengine then finds
  by its import spec. mmengine reads a config's bases before any
  ``custom_imports``, so each of our bases that names ``mmseg::`` lists
  ``configs/_base_/scopes.py`` (which imports fcvit_mm) first
  (``tests/test_stacks.py``).
* :func:`fcvit_mm.models.checkpoint.guard_checkpoint_loading`:
  onedl-mmengine loads checkpoints with
  its own ``mmengine.runner.checkpoint._safe_torch_load``, which (1) leaves
  torch's allowlist without the entries fcvit_mm registered (it adds its
  list in ``torch.serialization.safe_globals``, whose exit removes them
  all) and (2) loads again with ``weights_only=False``, running whatever
  the file holds, when the weights-only load fails. It is replaced by
  fcvit_mm's weights-only load (an error naming the file, no second try).

A third difference needs no change of theirs: onedl-mmengine's
iteration-based loop resumes by moving its sampler forward without loading
the consumed batches; :class:`fcvit_mm.engine.RandomStateHook` loads them
(as mmengine 0.10.7 does) through the loop's public iterator, so the data
workers' generators are where an uninterrupted run's are.
"""
import copyreg
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
from typing import Any, Dict, List, Tuple

#: instance attributes that mmengine's ``Runner.__init__`` sets and that
#: the run layer reads or sets (see the module doc)
RUNNER_ATTRIBUTES: Dict[str, str] = {
    '_resume': '--resume past checkpoints that do not load',
    '_load_from': '--resume past checkpoints that do not load',
    '_randomness_cfg': 'exact resume with seed=None',
    '_train_dataloader': 'exact resume with seed=None',
    '_train_loop': 'checking the data of the loops already built',
    '_val_loop': 'checking the data of the loops already built',
    '_test_loop': 'checking the data of the loops already built',
}
#: private names, 'module:name' or 'module:name.attr' -> what needs it
PRIVATE_NAMES: Dict[str, str] = {
    'torch.distributed.distributed_c10d:_get_default_store':
    'naming the rank that stopped answering',
    'numpy.core.multiarray:_reconstruct':
    'numpy arrays in weights-only checkpoints',
    'numpy.core.multiarray:scalar':
    'numpy scalars in weights-only checkpoints',
    'mmengine.runner.checkpoint:_safe_torch_load':
    "onedl-mmengine's checkpoint loading, replaced (no fallback that runs "
    'code, the allowlist kept)',
    'torch:ops.mkldnn._convolution_pointwise':
    "oneDNN's fused depthwise convolution on the CPU",
    'torch.nn.modules.batchnorm:_BatchNorm':
    "FCViT's init and norm_eval on every BatchNorm kind (as mmcv's "
    'backbones do)',
    'torch:_dynamo.reset':
    "forgetting compiled code between the GPU check's models",
    'torch._inductor.config:freezing':
    "benchmark_onnx.py --freezing (inductor's weights as constants)",
}
#: instance attributes of other libraries' objects that only their code
#: shows: ('module:qualname' of the function that sets or reads it,
#: attribute) -> what needs it
SOURCE_ATTRIBUTES: Dict[Tuple[str, str], str] = {
    ('mmpretrain.apis.image_classification:'
     'ImageClassificationInferencer.__init__', '_dataset_meta'):
    "an ONNX classifier's class names in mmpretrain's inferencer",
}


#: listed names that only the onedl-* stack has
ONEDL_ONLY = ('mmengine.runner.checkpoint:_safe_torch_load', )


@functools.lru_cache(maxsize=None)
def stack() -> str:
    """``'onedl'`` where mmengine is installed as onedl-mmengine (the
    onedl-* packages), else ``'openmmlab'``."""
    try:
        importlib.metadata.version('onedl-mmengine')
    except importlib.metadata.PackageNotFoundError:
        return 'openmmlab'
    return 'onedl'


def _applies(spec: str) -> bool:
    """Whether a listed name is needed here: oneDNN's ops where torch has
    oneDNN, mmpretrain's names where mmpretrain is installed."""
    if spec.startswith('torch:ops.mkldnn.'):
        import torch
        return torch.backends.mkldnn.is_available()
    if spec in ONEDL_ONLY:
        return stack() == 'onedl'
    module = spec.partition(':')[0]
    return importlib.util.find_spec(module.split('.')[0]) is not None


class InternalsError(RuntimeError):
    """A private name of another library that fcvit_mm relies on is gone."""


def _gone(name: str, why: str) -> InternalsError:
    return InternalsError(
        f'{name} is gone (an upgrade of {name.split(".")[0]}?): fcvit_mm '
        f'needs it for {why}; see fcvit_mm/internals.py')


def private(spec: str) -> Any:
    """The private object ``'module:name'`` (or ``'module:name.attr'``)
    listed above; :class:`InternalsError` naming it if it is gone."""
    why = PRIVATE_NAMES.get(spec)
    if why is None:
        raise KeyError(f'{spec!r} is not listed in fcvit_mm.internals')
    module, _, path = spec.partition(':')
    if module.startswith('numpy.core.'):
        import numpy
        if int(numpy.__version__.split('.')[0]) >= 2:  # where it pickles
            module = module.replace('numpy.core.', 'numpy._core.')
    try:
        obj = importlib.import_module(module)
        for part in path.split('.'):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise _gone(f'{module}.{path}', why) from None
    return obj


def get_private(runner, name: str) -> Any:
    """``runner.<name>`` for a name of :data:`RUNNER_ATTRIBUTES`."""
    assert name in RUNNER_ATTRIBUTES, name
    try:
        return getattr(runner, name)
    except AttributeError:
        raise _gone(f'mmengine.runner.Runner.{name}',
                    RUNNER_ATTRIBUTES[name]) from None


def set_private(runner, name: str, value: Any) -> None:
    """Set ``runner.<name>`` (checked to exist first)."""
    get_private(runner, name)
    setattr(runner, name, value)


def missing_internals() -> List[str]:
    """The private names listed here that the installed libraries lack
    (each with why it is needed); empty when all are there."""
    missing = []
    for spec in PRIVATE_NAMES:
        if not _applies(spec):
            continue
        try:
            private(spec)
        except InternalsError as e:
            missing.append(str(e))
    from mmengine.runner import Runner
    source = inspect.getsource(Runner.__init__)
    for name, why in RUNNER_ATTRIBUTES.items():
        if f'self.{name} =' not in source:
            missing.append(str(_gone(f'mmengine.runner.Runner.{name}', why)))
    for (where, attr), why in SOURCE_ATTRIBUTES.items():
        if not _applies(where):
            continue
        name = f'{where.replace(":", ".")} (.{attr})'
        try:
            obj = importlib.import_module(where.partition(':')[0])
            for part in where.partition(':')[2].split('.'):
                obj = getattr(obj, part)
            found = re.search(rf'[.\'"]{attr}\b', inspect.getsource(obj))
        except (ImportError, AttributeError, OSError, TypeError):
            found = False
        if not found:
            missing.append(str(_gone(name, why)))
    return missing


# --------------------------------------------------------------------------
# HistoryBuffer pickling (see the module doc)
# --------------------------------------------------------------------------
def _reduce_history_buffer(buffer):
    state = {k: v for k, v in vars(buffer).items()
             if k not in ('statistics_methods', '_statistics_methods')}
    return copyreg.__newobj__, (type(buffer), ), state


def register_history_buffer_pickling() -> None:
    """Pickle mmengine's ``HistoryBuffer`` as plain data (its statistics
    methods are class-level defaults that every buffer has anyway)."""
    from mmengine.logging import HistoryBuffer
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)


# --------------------------------------------------------------------------
# The onedl-* stack (see the module doc)
# --------------------------------------------------------------------------
def register_config_scopes() -> None:
    """Point each config scope whose distribution is not installed, but
    whose module is, at the module (``mmseg::`` on onedl-mmsegmentation)."""
    from mmengine.config import utils as config_utils
    table = config_utils.MODULE2PACKAGE
    for scope, dist in list(table.items()):
        if dist == scope or importlib.util.find_spec(scope) is None:
            continue
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            table[scope] = scope
