"""Helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""
import importlib.util
import os.path as osp

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
