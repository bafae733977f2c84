"""Helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""
import collections
import contextlib
import logging
import importlib.util
import os.path as osp
import socket
import subprocess
import threading

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(path):
    """``tools/<path>.py`` as a module, e.g. ``load_tool('train')`` or
    ``load_tool('analysis/benchmark')`` (by file, since ``tools/test.py``
    would clash with the stdlib's ``test`` package if imported by name)."""
    name = 'fcvit_tools_' + path.replace('/', '_')
    spec = importlib.util.spec_from_file_location(
        name, osp.join(ROOT, 'tools', *path.split('/')) + '.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_transform(pipeline, type_):
    """The first transform of ``type_`` in a data pipeline (a failed
    assertion naming the pipeline if there is none)."""
    found = [t for t in pipeline if t['type'] == type_]
    assert found, f'{type_} missing from {pipeline}'
    return found[0]


def free_port():
    """A TCP port free on this machine right now (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One intra-op thread in the importing module (import the fixture
    there): its small runs are made of many tiny ops, about as fast on one
    thread as on two on an idle machine and several times faster on shared,
    busy cores (two OpenMP threads wait on each other behind other jobs).
    Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@HOOKS.register_module(force=True)
class TrainRecorderHook(Hook):
    """Keeps what the tests check of a run: weights before and after
    training, the training losses, the learning rate the optimiser started
    from and the validation metrics."""
    priority = 'LOWEST'

    def __init__(self):
        self.before, self.after, self.losses, self.metrics = {}, {}, [], []
        self.base_lr = None

    @staticmethod
    def _params(runner):
        model = runner.model
        model = getattr(model, 'module', model)
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    def before_train(self, runner):
        self.before = self._params(runner)
        group = runner.optim_wrapper.optimizer.param_groups[0]
        self.base_lr = group.get('initial_lr', group['lr'])

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append(float(outputs['loss']))

    def after_train(self, runner):
        self.after = self._params(runner)

    def after_val_epoch(self, runner, metrics=None):
        self.metrics.append(dict(metrics or {}))


def generated_shapes(tmp_path_factory, name, fmt, **kwargs):
    """The root of a generated shapes dataset (``make_shapes_dataset``
    arguments) in a fresh temporary folder, for a module-scoped fixture."""
    from fcvit_mm.datasets import make_shapes_dataset
    root = str(tmp_path_factory.mktemp(name))
    return make_shapes_dataset(root, fmt=fmt, **kwargs)['root']


def module_folder(tmp_path_factory, name, source):
    """A fresh temporary folder holding the Python module ``<name>.py``
    (``source``), to put on a run's PYTHONPATH; the folder's path."""
    folder = tmp_path_factory.mktemp(name)
    (folder / (name + '.py')).write_text(source)
    return str(folder)


def selected(request):
    """The names (``test_x[param]`` if parametrized) of the tests of
    ``request``'s module that this session runs, for a module-scoped
    fixture that starts, at once, the background runs of those only."""
    return {item.name for item in request.session.items
            if item.module is request.module}


class BackgroundRuns:
    """Commands run in background threads, each in its process, in the
    order they were added, with at most ``slots`` cores' worth at a time
    (a command of ``weight`` 2 is a two-rank job): on two cores, one
    process's start-up and waits leave the other core to the next. A test
    takes its command's result with :meth:`result`."""

    def __init__(self, slots=3):
        self._cond = threading.Condition()
        self._free = slots
        self._queue = collections.deque()
        self._threads, self._results = {}, {}

    def add(self, key, command, weight=1, timeout=600):
        """``command()``: (command line, working folder, environment), made
        when the command starts (a free port then is still free)."""
        self._queue.append(key)

        def work():
            with self._cond:
                self._cond.wait_for(lambda: self._queue[0] == key and
                                    self._free >= weight)
                self._queue.popleft()
                self._free -= weight
                self._cond.notify_all()
            try:
                cmd, cwd, env = command()
                self._results[key] = subprocess.run(
                    cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True, timeout=timeout)
            except BaseException as e:  # given to the test
                self._results[key] = e
            finally:
                with self._cond:
                    self._free += weight
                    self._cond.notify_all()

        self._threads[key] = threading.Thread(target=work, daemon=True)
        self._threads[key].start()

    def result(self, key):
        """The CompletedProcess of ``key`` (text stdout and stderr), once
        it has ended; its exception if it could not run."""
        self._threads[key].join()
        res = self._results[key]
        if isinstance(res, BaseException):
            raise res
        return res

    def wait_all(self):
        for thread in self._threads.values():
            thread.join()


def start_process(cmd, output_path, timeout=600, **popen_kwargs):
    """``cmd`` started in the background, its output (stdout and stderr) to
    the file ``output_path`` (a pipe would fill while another run is waited
    for). Returns ``finish(timeout)``: waits (killing the process past the
    timeout) and gives a CompletedProcess whose ``stdout`` is the output;
    ``finish.proc`` is the process."""
    out = open(output_path, 'w+')
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            text=True, **popen_kwargs)

    def finish(timeout=timeout):
        try:
            proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.seek(0)
            output = out.read()
            out.close()
        return subprocess.CompletedProcess(cmd, proc.returncode, output)

    finish.proc = proc
    return finish


def stop_unfinished(finishes):
    """Kill and reap the processes of ``finishes`` (:func:`start_process`'s
    results) that are still running: a module fixture's teardown, for the
    runs no test waited for (``-x``, ^C)."""
    for finish in finishes:
        proc = getattr(finish, 'proc', None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


class _CreatesFile:
    """Pickled, it names a call that unpickling would make: ``open(path,
    'w')``, which creates ``path``. Pickling it runs nothing."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def save_checkpoint_with_code(path, marker, **content):
    """``torch.save`` a checkpoint holding ``content`` and an object whose
    unpickling runs code (it creates the file ``marker``): a load that runs
    code leaves ``marker`` behind."""
    torch.save({**content, 'x': _CreatesFile(marker)}, str(path))


# ---------------------------------------------------------------------- #
# FCViT backbone builders and comparisons (the fast-path, export and
# compile tests)
# ---------------------------------------------------------------------- #
#: a tiny custom FCViT arch (widths divisible by the 8 global-context heads)
TINY_ARCH = dict(layers=[1, 1, 1, 1], embed_dims=[16, 32, 48, 64],
                 mlp_ratios=[2, 2, 2, 2])

#: conv biases right before a train-mode BatchNorm have a zero gradient in
#: exact arithmetic: every formulation gives rounding noise there
BN_BIASES = ('proj.bias', )


def randomize_params(module, seed=0):
    """Every parameter and BN statistic of ``module`` away from its init, so
    that each branch (layer scales, GC affines, norms) matters; returns
    ``module``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if 'layer_scale' in name or 'rescale' in name or 'norm' in name:
                p.copy_(0.5 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) *
                        (1. / max(1, p[0].numel())**0.5))
        for name, b in module.named_buffers():
            if 'running_var' in name:
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif 'running_mean' in name:
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
    return module


def assert_rel_close(actual, expected, rtol, name=''):
    """Max-abs error relative to the largest magnitude of ``expected``."""
    assert actual.shape == expected.shape, name
    scale = expected.abs().max().clamp_min(1e-30)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= rtol, f'{name}: relative error {err:.2e} > {rtol:.0e}'


@contextlib.contextmanager
def logged_records():
    """The records that mmengine's current logger emits inside the block
    (a list, filled as they come)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
