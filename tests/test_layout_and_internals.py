"""The package's layout and what it relies on in other libraries: no import
cycle inside fcvit_mm, the model side importing nothing of the run layer,
every hook registered by an explicit import, ``import fcvit_mm`` changing
no other library's object beyond what fcvit_mm/internals.py lists, each
private name listed there present (named plainly when an upgrade removes
it), and every private name of another library that fcvit_mm's code uses
listed there. Fast: source parsing and one subprocess."""
import ast
import os
import os.path as osp
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = osp.join(ROOT, 'fcvit_mm')
TOOLS = osp.join(ROOT, 'tools')
INTERNALS = osp.join(PACKAGE, 'internals.py')
#: top-level packages of this project (their private names are their own)
OURS = ('fcvit_mm', 'tools')


def _module_name(path):
    rel = osp.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _resolve(module, node):
    """The names an import node of ``module`` may refer to as modules."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    package = node.module
    if node.level:  # relative: from the module's package upwards
        is_pkg = osp.isfile(osp.join(ROOT, *module.split('.'),
                                     '__init__.py'))
        base = module if is_pkg else module.rpartition('.')[0]
        for _ in range(node.level - 1):
            base = base.rpartition('.')[0]
        package = f'{base}.{node.module}' if node.module else base
    return [package] + [f'{package}.{a.name}' for a in node.names]


def _imported(module, node, modules):
    """The fcvit_mm modules an import node of ``module`` imports: for
    ``from P import m``, the submodule ``P.m`` if there is one, else ``P``
    (a package whose submodule is being imported is not an edge back)."""
    package, *names = _resolve(module, node)
    if isinstance(node, ast.Import):
        return {n for n in [package] + names if n in modules}
    found = {n for n in names if n in modules}
    return found or ({package} & set(modules))


def import_graph(top_level_only=True):
    """{module: set of fcvit_mm modules it imports} over fcvit_mm's
    sources (imports at module level only, unless told otherwise)."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                path = osp.join(folder, name)
                modules[_module_name(path)] = path
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(open(path).read())
        nodes = tree.body if top_level_only else ast.walk(tree)
        found = set()
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found |= _imported(module, node, modules) - {module}
        graph[module] = found
    return graph


def _cycle(graph):
    """One import cycle of ``graph`` (a list of modules), or None."""
    state = {}

    def visit(node, stack):
        state[node] = 'open'
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == \
        ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': set()}) is None


@pytest.mark.parametrize('top_level_only', [True, False])
def test_no_import_cycle_inside_fcvit_mm(top_level_only):
    graph = import_graph(top_level_only)
    assert 'fcvit_mm.engine.resume' in graph  # the walk saw the sources
    cycle = _cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_model_side_imports_nothing_of_the_run_layer():
    graph = import_graph(top_level_only=False)
    model_side = [m for m in graph if m.startswith('fcvit_mm.models')]
    assert 'fcvit_mm.models.checkpoint' in model_side
    for module in model_side:
        run_side = [m for m in graph[module]
                    if m.startswith(('fcvit_mm.engine', 'fcvit_mm.utils',
                                     'fcvit_mm.deploy'))]
        assert not run_side, f'{module} imports {run_side}'


IMPORT_CHANGES = '''
import copyreg, sys
from mmengine.fileio import get_file_backend
from mmengine.fileio.backends import LocalBackend, backends
from mmengine.fileio.backends.registry_utils import prefix_to_backends
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS
before = dict(HistoryBuffer.__dict__), dict(CheckpointHook.__dict__)
files = dict(backends), dict(prefix_to_backends)
import fcvit_mm
assert dict(HistoryBuffer.__dict__) == before[0], 'HistoryBuffer changed'
assert dict(CheckpointHook.__dict__) == before[1], 'CheckpointHook changed'
# mmengine's 'local' backend stays; ours comes under its own name
assert dict(prefix_to_backends) == files[1], 'prefixes changed'
assert {k: v for k, v in backends.items() if k != 'atomic_local'} == \\
    files[0], 'backends changed'
assert type(get_file_backend('/tmp/x.pth')) is LocalBackend
assert copyreg.dispatch_table[HistoryBuffer].__module__ == \\
    'fcvit_mm.internals'
for name in ('SafeResumeHook', 'RandomStateHook', 'FiniteLossHook',
             'DataCheckHook', 'DataLoaderWorkersHook', 'SafeCheckpointHook'):
    assert HOOKS.get(name).__module__.startswith('fcvit_mm.engine.'), name
assert backends['atomic_local'].__module__ == 'fcvit_mm.engine.checkpoints'
print('ok')
'''


def test_import_registers_and_changes_only_what_internals_lists():
    """``import fcvit_mm`` leaves mmengine's classes and its 'local' file
    backend as they were (the HistoryBuffer's pickling goes through
    copyreg) and registers every hook of the configs and the atomic
    backend."""
    res = subprocess.run([sys.executable, '-c', IMPORT_CHANGES], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0 and 'ok' in res.stdout, res.stderr[-2000:]


#: underscore names of other libraries that are public API
PUBLIC_UNDERSCORE = {
    '_exit',  # os._exit, documented
}
#: the prefix of the project's own marks on other objects (a function's
#: ``_fcvit_float32_island``)
OWN_PREFIX = '_fcvit'


def _is_private(name):
    return name.startswith('_') and not name.startswith('__') and \
        len(name) > 1


def _sources():
    """The Python files of fcvit_mm (but internals.py) and of tools/."""
    for top in (PACKAGE, TOOLS):
        for folder, _, files in os.walk(top):
            for file in files:
                path = osp.join(folder, file)
                if file.endswith('.py') and path != INTERNALS:
                    yield path


def _private_names_of_the_project():
    """(names fcvit_mm and its tools define, {private name of another
    library their code uses: where}) over their sources: attributes,
    imported names and modules, and string constants (as given to getattr,
    not text: :func:`_text_only`) that start with one underscore."""
    defined, used = set(), {}
    for path in _sources():
        where = osp.relpath(path, ROOT)
        tree = ast.parse(open(path).read())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef,
                                        ast.FunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr)}
        parents = {id(child): n for n in ast.walk(tree)
                   for child in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef,
                                 ast.AsyncFunctionDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and \
                    isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
            elif isinstance(node, ast.Attribute):
                owner = node.value
                if isinstance(owner, ast.Name) and \
                        owner.id in ('self', 'cls') and \
                        isinstance(node.ctx, ast.Store):
                    defined.add(node.attr)
                elif _is_private(node.attr):
                    used.setdefault(node.attr, where)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 \
                    and not node.module.startswith(OURS):
                for name in node.module.split('.') + [
                        a.name for a in node.names]:
                    if _is_private(name):
                        used.setdefault(name, where)
            elif isinstance(node, ast.Import):
                for name in (part for a in node.names
                             if not a.name.startswith(OURS)
                             for part in a.name.split('.')):
                    if _is_private(name):
                        used.setdefault(name, where)
            elif isinstance(node, ast.Constant) and \
                    isinstance(node.value, str) and \
                    id(node) not in docstrings and \
                    _is_private(node.value) and \
                    node.value.isidentifier() and \
                    not _text_only(node, parents.get(id(node))):
                used.setdefault(node.value, where)
    return defined, used


def _text_only(constant, parent):
    """Whether a string constant is text, not an attribute's name: a part
    looked for in other text (``'_dw' in name``, ``.endswith(...)``) or an
    environment variable's name (upper case)."""
    if constant.value.isupper() or isinstance(parent, ast.Compare):
        return True
    return isinstance(parent, ast.Call) and \
        isinstance(parent.func, ast.Attribute) and \
        parent.func.attr in ('startswith', 'endswith')


def test_every_private_name_used_is_listed():
    """A private name of another library used anywhere in fcvit_mm or its
    tools is listed in fcvit_mm/internals.py (so that an upgrade that
    removes it is named by test_every_private_name_is_there)."""
    from fcvit_mm import internals
    listed = set(internals.RUNNER_ATTRIBUTES)
    for spec in internals.PRIVATE_NAMES:  # the modules' names too
        listed.update(spec.replace(':', '.').split('.'))
    listed.update(attr for _, attr in internals.SOURCE_ATTRIBUTES)
    defined, used = _private_names_of_the_project()
    # the walk sees the uses (attributes; a module imported by its name)
    assert '_convolution_pointwise' in used and '_inductor' in used
    unlisted = {name: where for name, where in used.items()
                if name not in defined | listed | PUBLIC_UNDERSCORE
                and not name.startswith(OWN_PREFIX)}
    assert not unlisted, (
        'private names of other libraries used but not listed in '
        f'fcvit_mm/internals.py: {unlisted}')


def test_a_removed_instance_attribute_is_named(monkeypatch):
    """An attribute that only another library's source shows (checked in
    that source) is named when the source no longer has it."""
    from fcvit_mm import internals
    pytest.importorskip('mmpretrain')
    monkeypatch.setitem(
        internals.SOURCE_ATTRIBUTES,
        ('mmpretrain.apis.image_classification:'
         'ImageClassificationInferencer.__init__', '_no_such_attribute'),
        'a test')
    missing = internals.missing_internals()
    assert any('ImageClassificationInferencer.__init__ '
               '(._no_such_attribute) is gone' in m and 'a test' in m
               for m in missing), missing
    assert len(missing) == 1, missing


def test_a_listed_class_that_does_not_exist_is_named(monkeypatch):
    """An attribute listed under a class that an upgrade renamed or
    removed: the class is named as gone (its source cannot be read)."""
    from fcvit_mm import internals
    monkeypatch.setitem(
        internals.SOURCE_ATTRIBUTES,
        ('torch.nn:NoSuchModule.__init__', '_weights'), 'a test')
    missing = internals.missing_internals()
    assert any('torch.nn.NoSuchModule.__init__ (._weights) is gone' in m
               and 'a test' in m for m in missing), missing


def test_every_private_name_is_there():
    from fcvit_mm.internals import missing_internals
    missing = missing_internals()
    assert not missing, '\n'.join(missing)


def test_a_removed_private_name_is_named(monkeypatch):
    import torch.distributed.distributed_c10d as c10d

    from fcvit_mm import internals
    from fcvit_mm.engine.distributed import unanswered_ranks
    monkeypatch.delattr(c10d, '_get_default_store')
    with pytest.raises(internals.InternalsError,
                       match=r'torch\.distributed\.distributed_c10d\.'
                       r'_get_default_store is gone.*naming the rank'):
        internals.private(
            'torch.distributed.distributed_c10d:_get_default_store')
    assert any('_get_default_store is gone' in m
               for m in internals.missing_internals())
    assert unanswered_ranks(wait=0) is None  # the message says less

    class OldRunner:  # a runner of an mmengine without _resume
        pass

    with pytest.raises(internals.InternalsError,
                       match=r'mmengine\.runner\.Runner\._resume is gone'):
        internals.get_private(OldRunner(), '_resume')
    with pytest.raises(KeyError, match='not listed'):
        internals.private('torch:_C')
