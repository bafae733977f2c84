# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The runtimes that run an export's ONNX graphs: one table,
:data:`RUNTIMES`, that every caller reads (:func:`check_runtime`,
:func:`open_session`, :func:`~fcvit_mm.deploy.init_onnx_model` and the
``--runtime`` choices of the deployment tools).

Each entry (:class:`Runtime`) names the package the runtime needs and how
to install it, how it opens a session of one ``.onnx`` file, the
precisions it runs and the options its sessions take. Adding a runtime is
adding one entry (:func:`register_runtime` does it from outside). Every
session offers the same things, which is all :class:`~fcvit_mm.deploy.
runtime.OnnxPart` uses:

* ``inputs``: the graph's inputs as :class:`InputSpec` (name, and shape with
  ``int`` for a fixed dimension and ``None`` or the dimension's name for a
  dynamic one);
* ``run(feed)``: ``{input name: float32 array}`` -> the graph's outputs, a
  list of numpy arrays in the graph's output order;
* ``runtime`` and ``precision``: its entry's name and the precision it
  runs in.

Precisions (:data:`PRECISIONS`): ``'fp32'``, the default of every runtime
(float32, the parity with PyTorch of docs/deployment.md), and ``'bf16'``
(OpenVINO only: bfloat16 inference precision, parity criteria of its own).
ONNX Runtime is the ``deploy`` extra's; OpenVINO is the ``openvino`` extra
(``pip install -e .[openvino]``), compiled for the CPU with the inference
precision asked set (on CPUs with bf16 support it would otherwise pick
bf16 itself); on a CPU without bf16 support ``'bf16'`` runs float32, with a
:class:`PrecisionFallbackWarning` that says why.
"""
import importlib
import warnings
from dataclasses import dataclass
from typing import (Any, Callable, Dict, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np

#: precision name -> what it is
PRECISIONS = {'fp32': 'float32', 'bf16': 'bfloat16'}
#: the version of the ``openvino`` extra (requirements/constraints.txt)
OPENVINO_VERSION = '2026.4.1'
OPENVINO_INSTALL = (f'pip install -e .[openvino] (or: pip install '
                    f'openvino=={OPENVINO_VERSION}, the version pinned in '
                    f'requirements/constraints.txt)')

Dim = Union[int, str, None]


@dataclass(frozen=True)
class InputSpec:
    """One input of a graph: its name and shape (``int``: fixed; ``None``
    or a name: dynamic)."""
    name: str
    shape: Tuple[Dim, ...]


@dataclass(frozen=True)
class Runtime:
    """One entry of :data:`RUNTIMES`.

    Attributes:
        name: what ``runtime=`` and the tools' ``--runtime`` take.
        package: the module the runtime needs.
        install: how to install it (said when it is missing).
        session: ``session(path, threads, precision, **options)`` -> a
            session of the graph at ``path`` (see the module's doc).
        precisions: the precisions it runs (keys of :data:`PRECISIONS`).
        options: the keyword options its sessions take beyond those.
        unavailable: ``unavailable(precision)`` -> why this machine cannot
            run ``precision`` (it then runs float32, saying why), or None.
    """
    name: str
    package: str
    install: str
    session: Callable[..., Any]
    precisions: Tuple[str, ...] = ('fp32', )
    options: Tuple[str, ...] = ()
    unavailable: Optional[Callable[[str], Optional[str]]] = None


class PrecisionFallbackWarning(UserWarning):
    """A precision asked of a runtime that this machine cannot run: the
    session runs float32 instead."""


def runtime_entry(runtime: str) -> Runtime:
    """The entry of ``runtime`` in :data:`RUNTIMES`, or a ValueError naming
    the valid ones."""
    if runtime not in RUNTIMES:
        raise ValueError(f'unknown runtime {runtime!r}: choose one of '
                         f'{", ".join(map(repr, RUNTIMES))}')
    return RUNTIMES[runtime]


def check_runtime(runtime: str, precision: str = 'fp32') -> Runtime:
    """The entry of ``runtime``; a ValueError naming the valid runtimes or
    the runtime's precisions if either is not one, an ImportError naming
    what to install if its package is missing."""
    entry = runtime_entry(runtime)
    if precision not in entry.precisions:
        raise ValueError(f'runtime={runtime!r} runs precision '
                         f'{" or ".join(map(repr, entry.precisions))}, '
                         f'not {precision!r}')
    try:
        importlib.import_module(entry.package)
    except ImportError as e:
        raise ImportError(f'runtime={runtime!r} needs the {entry.package} '
                          f'package, which is not installed: '
                          f'{entry.install}') from e
    return entry


def session_precision(runtime: str, precision: str = 'fp32') -> str:
    """The precision a session of ``runtime`` runs when ``precision`` is
    asked: ``precision``, or ``'fp32'`` with a
    :class:`PrecisionFallbackWarning` naming why where this machine cannot
    run it (e.g. bf16 on a CPU without bf16 support)."""
    entry = check_runtime(runtime, precision)
    reason = entry.unavailable(precision) if entry.unavailable else None
    if reason is None:
        return precision
    warnings.warn(f'precision={precision!r} in {runtime}: {reason}; '
                  f'running float32 (precision=\'fp32\') instead',
                  PrecisionFallbackWarning, stacklevel=3)
    return 'fp32'


def open_session(path: str, runtime: str = 'onnxruntime',
                 threads: Optional[int] = None, precision: str = 'fp32',
                 **options):
    """A session of the graph at ``path`` in ``runtime``, with ``threads``
    intra-op threads (default: the runtime's choice), in ``precision``
    (falling back to float32, saying why, where this machine cannot run
    it: :func:`session_precision`); ``options`` are the runtime's own
    (its entry's ``options``)."""
    check_options(runtime, options)
    precision = session_precision(runtime, precision)
    return RUNTIMES[runtime].session(path, threads, precision, **options)


def check_options(runtime: str, options: dict) -> None:
    """Raise a ValueError naming the runtimes that take an option if
    ``runtime`` does not take one of ``options``."""
    entry = runtime_entry(runtime)
    for name in options:
        if name not in entry.options:
            owners = [r for r, e in RUNTIMES.items() if name in e.options]
            raise ValueError(f'{name} is an option of runtime '
                             f'{" / ".join(map(repr, owners)) or "none"}, '
                             f'not of runtime={runtime!r}')


def register_runtime(entry: Runtime) -> Runtime:
    """Add ``entry`` to :data:`RUNTIMES` (replacing one of the same name);
    returns it."""
    RUNTIMES[entry.name] = entry
    return entry


# --------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------
def _lowered_for_onnxruntime(path: str) -> Union[str, bytes]:
    """The graph at ``path`` as ONNX Runtime gets it: the file itself, or
    its serialised bytes after :func:`~fcvit_mm.deploy.lowering.
    layer_norm_to_instance_norm` rewrote something."""
    import onnx

    from .lowering import layer_norm_to_instance_norm
    model = onnx.load(path)
    if not layer_norm_to_instance_norm(model):
        return path
    return model.SerializeToString()


class OrtSession:
    """An ONNX Runtime session of one graph, float32.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: ONNX Runtime's choice); the
            inter-op pool is then one thread.
        precision: ``'fp32'`` (the only one it runs).
        providers: execution providers (default: the CPU's).
        profile_prefix: turn on ONNX Runtime's profiler, writing its trace
            to files starting with this prefix (``session.end_profiling()``
            ends it and returns the file).
    """
    runtime = 'onnxruntime'

    def __init__(self, path: str, threads: Optional[int] = None,
                 precision: str = 'fp32',
                 providers: Optional[Sequence[str]] = None,
                 profile_prefix: Optional[str] = None):
        check_runtime(self.runtime, precision)
        import onnxruntime as ort
        self.precision = precision
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        self.session = ort.InferenceSession(
            _lowered_for_onnxruntime(path), opts,
            providers=list(providers or ['CPUExecutionProvider']))
        self.inputs = [InputSpec(i.name, tuple(i.shape))
                       for i in self.session.get_inputs()]

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return self.session.run(None, feed)


# --------------------------------------------------------------------------
# OpenVINO
# --------------------------------------------------------------------------
_core = None
#: precision -> the name of OpenVINO's element type for
#: ``INFERENCE_PRECISION_HINT``
OPENVINO_TYPES = {'fp32': 'f32', 'bf16': 'bf16'}


def openvino_core():
    """One ``openvino.Core`` per process (OpenVINO's advice: its plugins
    are created once per Core)."""
    global _core
    if _core is None:
        check_runtime('openvino')
        import openvino
        _core = openvino.Core()
    return _core


def openvino_cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 on this CPU (``'BF16'`` in
    its ``OPTIMIZATION_CAPABILITIES``)."""
    return 'BF16' in openvino_core().get_property(
        'CPU', 'OPTIMIZATION_CAPABILITIES')


def _openvino_unavailable(precision: str) -> Optional[str]:
    """Why OpenVINO does not run ``precision`` here: bf16 where its CPU
    plugin has no BF16, or where :func:`fcvit_mm.utils.cpu.bf16_support`
    says no (e.g. ``FCVIT_MM_CPU_BF16=0``)."""
    from ..utils.cpu import bf16_support
    if precision != 'bf16':
        return None
    if not openvino_cpu_has_bf16():
        return ('this CPU has no bf16 support (OpenVINO\'s CPU '
                'OPTIMIZATION_CAPABILITIES has no BF16)')
    support = bf16_support()
    return None if support.native else f'no native bf16: {support.reason}'


class OpenVinoSession:
    """An OpenVINO model of one graph, compiled for the CPU with the
    inference precision asked (``INFERENCE_PRECISION_HINT``).

    Args:
        path: the ``.onnx`` file (read by OpenVINO's ONNX front end; dynamic
            dimensions stay dynamic).
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice).
        precision: ``'fp32'`` or ``'bf16'`` (:func:`open_session` falls
            back to ``'fp32'`` where the CPU has no bf16).
        profile: turn on OpenVINO's per-layer performance counters
            (``PERF_COUNT``), read with :meth:`profile`.
    """
    runtime = 'openvino'

    def __init__(self, path: str, threads: Optional[int] = None,
                 precision: str = 'fp32', profile: bool = False):
        check_runtime(self.runtime, precision)
        import openvino as ov
        core = openvino_core()
        self.precision = precision
        config: Dict[str, Any] = {
            'INFERENCE_PRECISION_HINT': getattr(ov.Type,
                                                OPENVINO_TYPES[precision])}
        if threads:
            config['INFERENCE_NUM_THREADS'] = int(threads)
        if profile:
            config['PERF_COUNT'] = True
        self.model = core.read_model(path)
        self.compiled = core.compile_model(self.model, 'CPU', config)
        self.request = self.compiled.create_infer_request()
        self.inputs = [InputSpec(
            i.get_any_name(),
            tuple(d.get_length() if d.is_static else None
                  for d in i.get_partial_shape()))
            for i in self.compiled.inputs]
        self._n_out = len(self.compiled.outputs)

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        self.request.infer(feed)
        # copies: the request's output buffers are reused by the next run
        return [np.array(self.request.get_output_tensor(i).data, copy=True)
                for i in range(self._n_out)]

    def profile(self) -> List[Tuple[str, str, float]]:
        """(layer type, implementation, microseconds) of every layer that
        ran in the last :meth:`run` (needs ``profile=True``)."""
        status = self.request.get_profiling_info()
        return [(p.node_type, p.exec_type,
                 p.real_time.total_seconds() * 1e6)
                for p in status
                if p.status == p.Status.EXECUTED]


#: name -> :class:`Runtime`: the runtimes an export runs in
RUNTIMES: Dict[str, Runtime] = {entry.name: entry for entry in (
    Runtime('onnxruntime', 'onnxruntime', 'pip install -e .[deploy]',
            OrtSession, options=('providers', 'profile_prefix')),
    Runtime('openvino', 'openvino', OPENVINO_INSTALL, OpenVinoSession,
            precisions=('fp32', 'bf16'), options=('profile', ),
            unavailable=_openvino_unavailable),
)}
