# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""The runtimes that run an export's ONNX graphs, behind one small
interface.

:func:`open_session` reads one ``.onnx`` file into a session of the runtime
named (``'onnxruntime'`` or ``'openvino'``, both on the CPU). Every session
offers the same two things, which is all :class:`~fcvit_mm.deploy.runtime.
OnnxPart` uses:

* ``inputs``: the graph's inputs as :class:`InputSpec` (name, and shape with
  ``int`` for a fixed dimension and ``None`` or the dimension's name for a
  dynamic one);
* ``run(feed)``: ``{input name: float32 array}`` -> the graph's outputs, a
  list of numpy arrays in the graph's output order.

ONNX Runtime is the ``deploy`` extra's; OpenVINO is the ``openvino`` extra
(``pip install -e .[openvino]``). OpenVINO compiles the graph for the CPU
with float32 inference precision forced (on CPUs with bf16 or fp16 support
it would otherwise pick the lower precision).
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

RUNTIMES = ('onnxruntime', 'openvino')
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


def check_runtime(runtime: str) -> None:
    """Raise a ValueError naming the valid runtimes if ``runtime`` is not
    one, an ImportError naming the extra to install if its package is
    missing."""
    if runtime not in RUNTIMES:
        raise ValueError(f'unknown runtime {runtime!r}: choose one of '
                         f'{", ".join(map(repr, RUNTIMES))}')
    if runtime == 'openvino':
        _openvino()
    else:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ImportError('runtime=\'onnxruntime\' needs the '
                              'onnxruntime package, which is not installed: '
                              'pip install -e .[deploy]') from e


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
    """An ONNX Runtime session of one graph.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: ONNX Runtime's choice); the
            inter-op pool is then one thread.
        providers: execution providers (default: the CPU's).
        profile_prefix: turn on ONNX Runtime's profiler, writing its trace
            to files starting with this prefix (``session.end_profiling()``
            ends it and returns the file).
    """
    runtime = 'onnxruntime'

    def __init__(self, path: str, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None,
                 profile_prefix: Optional[str] = None):
        import onnxruntime as ort
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


_core = None


def _openvino():
    try:
        import openvino
    except ImportError as e:
        raise ImportError(f'runtime=\'openvino\' needs the openvino '
                          f'package, which is not installed: '
                          f'{OPENVINO_INSTALL}') from e
    return openvino


def openvino_core():
    """One ``openvino.Core`` per process (OpenVINO's advice: its plugins
    are created once per Core)."""
    global _core
    if _core is None:
        _core = _openvino().Core()
    return _core


class OpenVinoSession:
    """An OpenVINO model of one graph, compiled for the CPU in float32.

    Args:
        path: the ``.onnx`` file (read by OpenVINO's ONNX front end; dynamic
            dimensions stay dynamic).
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice).
        profile: turn on OpenVINO's per-layer performance counters
            (``PERF_COUNT``), read with :meth:`profile`.
    """
    runtime = 'openvino'

    def __init__(self, path: str, threads: Optional[int] = None,
                 profile: bool = False):
        ov = _openvino()
        core = openvino_core()
        config: Dict[str, Any] = {'INFERENCE_PRECISION_HINT': ov.Type.f32}
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


def open_session(path: str, runtime: str = 'onnxruntime',
                 threads: Optional[int] = None, **kwargs):
    """A session of the graph at ``path`` in ``runtime``; ``kwargs`` go to
    the runtime's session class (:class:`OrtSession`,
    :class:`OpenVinoSession`)."""
    check_runtime(runtime)
    if runtime == 'openvino':
        return OpenVinoSession(path, threads, **kwargs)
    return OrtSession(path, threads, **kwargs)
