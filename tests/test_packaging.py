"""Packaging: OpenMMLab's conventions.

The metafiles and the root model index describe every config with the
numbers of README's model zoo and the reference's published results; a
wheel built from the sources carries the configs, tools and model index
under ``fcvit_mm/.mim/`` and the LICENSE; installed with ``--target`` into
a folder of its own (no source tree on the path), mmpretrain's
``get_model`` finds the FCViT models by name and ``mim search fcvit_mm``
lists every model of the index; ``get_model`` works in either import
order; the repository passes its lint (``ruff.toml``, ``make lint``).
"""
import glob
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml
from conftest import ROOT
from helpers import selected

TASKS = ('classification', 'detection', 'segmentation')
#: what a wheel build needs from the source tree
BUILD_ITEMS = ('setup.py', 'MANIFEST.in', 'README.md', 'LICENSE',
               'model-index.yml', 'requirements', 'fcvit_mm', 'configs',
               'tools')
REFERENCE = 'https://github.com/ma-xu/FCViT'


def top_configs(task):
    return sorted(
        osp.relpath(p, ROOT)
        for p in glob.glob(osp.join(ROOT, 'configs', task, '*.py'))
        if not osp.basename(p).startswith('demo_'))


def metafile(task):
    with open(osp.join(ROOT, 'configs', task, 'metafile.yml')) as f:
        return yaml.safe_load(f)


def readme_rows():
    """README's model zoo rows: config path -> the row's cells."""
    rows = {}
    with open(osp.join(ROOT, 'README.md')) as f:
        for line in f:
            m = re.match(r'\| \[\w+\.py\]\((configs/[^)]+)\) \|(.*)\|$',
                         line.strip())
            if m:
                rows[m[1]] = [c.strip() for c in m[2].split('|')]
    return rows


def variant(config):
    return re.search(r'(tiny|b12|b24|b48)', osp.basename(config))[1]


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{cmd} failed:\n{out[-5000:]}'
    return out


# --------------------------------------------------------------------------
# model index
# --------------------------------------------------------------------------
def test_repository_passes_its_lint():
    """``make lint``'s check, so that ``make test`` fails where CI's lint
    would (ruff comes with requirements/tests.txt)."""
    pytest.importorskip('ruff')
    res = subprocess.run([sys.executable, '-m', 'ruff', 'check', '.'],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert osp.isfile(osp.join(ROOT, 'ruff.toml'))


def test_model_index_imports_every_metafile():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    assert index['Import'] == [
        f'configs/{task}/metafile.yml' for task in TASKS]


@pytest.mark.parametrize('task', TASKS)
def test_metafile_lists_every_config(task):
    """One model per top-level config (root-relative Config paths, as the
    OpenMMLab indexes), unique names."""
    models = metafile(task)['Models']
    configs = [m['Config'] for m in models]
    assert sorted(configs) == top_configs(task)
    names = [m['Name'] for m in models]
    assert len(set(names)) == len(names)
    for m in models:
        assert osp.isfile(osp.join(ROOT, m['Config'])), m['Config']
        collection = m['In Collection']
        assert collection in [c['Name'] for c in metafile(task)
                              ['Collections']]


@pytest.mark.parametrize('task', TASKS)
def test_metafile_numbers_are_readmes(task):
    """Parameters and FLOPs as README's model zoo tables; results the
    reference's published ones, with their source; the weights' source
    names the variant's ImageNet checkpoint of the reference."""
    rows = readme_rows()
    for m in metafile(task)['Models']:
        meta, config = m['Metadata'], m['Config']
        row = rows.get(config) or rows[config.replace('_amp', '')]
        assert meta['Parameters'] == int(row[0].replace(',', '')), config
        flops = [c for c in row if c.endswith(' G')][0]
        if isinstance(meta['FLOPs'], int):  # exact count (classification)
            assert f'{meta["FLOPs"] / 1e9:.2f} G' == flops, config
        else:
            assert meta['FLOPs'] == flops.replace(' ', ''), config
        published = row[-1]
        if published == '-':
            assert 'Results' not in m, config
            assert m['Results Source'].startswith('none'), config
        else:
            values = [v for r in m['Results']
                      for v in r['Metrics'].values()]
            assert ' / '.join(str(v) for v in values) == published, config
            assert m['Results Source'].startswith(REFERENCE), config
        assert m['Weights Source'].startswith(REFERENCE), config
        assert f'fcvit_{variant(config)} ' in m['Weights Source'], config


def test_modelindex_loads_the_root_index():
    """The index parses with the model-index library (what mim reads) into
    every model of the three metafiles."""
    pytest.importorskip('modelindex')
    from modelindex.load_model_index import load
    index = load(osp.join(ROOT, 'model-index.yml'))
    index.build_models_with_collections()
    names = {m.name for m in index.models}
    assert names == {m['Name'] for task in TASKS
                     for m in metafile(task)['Models']}


@pytest.mark.parametrize('task', TASKS)
def test_configs_point_to_the_reference_checkpoint(task):
    """The docs say once which reference checkpoint each variant takes and
    how; each config builds that variant, points to those docs, and (dense
    configs) takes the checkpoint in ``pretrained``, which reaches the
    backbone's ``init_cfg`` (None: from scratch)."""
    from mmengine.config import Config
    docs = open(osp.join(ROOT, 'docs', f'{task}.md')).read()
    assert REFERENCE in docs and 'download table' in docs
    assert re.search(r'checkpoints/fcvit_\w+\.pth\.tar', docs)
    for config in top_configs(task):
        v = variant(config)
        assert f'fcvit_{v}' in docs, config
        assert f'docs/{task}.md' in open(osp.join(ROOT, config)).read(), \
            config
        cfg = Config.fromfile(osp.join(ROOT, config))
        assert cfg.model.backbone.arch == v, config
        if task == 'classification':
            continue
        assert cfg.pretrained is None, config
        assert cfg.model.backbone.init_cfg.type == 'Pretrained', config
        assert cfg.model.backbone.init_cfg.checkpoint is None, config
        if task == 'segmentation':  # the backbone out of a whole model
            assert cfg.model.backbone.init_cfg.prefix == 'backbone.', config


# --------------------------------------------------------------------------
# mmpretrain's get_model by name, in either import order
# --------------------------------------------------------------------------
GET_MODEL = '''
import sys
{imports}
from mmpretrain import get_model
model = get_model('fcvit-b12_8xb128_in1k')
n = sum(p.numel() for p in model.parameters())
assert n == 14701832, n
assert not any(type(f).__name__ == '_RegisterAfterMMPretrain'
               for f in sys.meta_path)
print('built', type(model).__name__, n)
'''


#: the two import orders, each in a fresh interpreter
IMPORT_ORDERS = {
    'fcvit_mm-first': 'import fcvit_mm\nassert "mmpretrain" not in '
                      'sys.modules\nimport mmpretrain',
    'mmpretrain-first': 'import mmpretrain\nimport fcvit_mm',
}


@pytest.fixture(scope='module')
def get_model_runs(request):
    """The interpreters of the selected orders, started together (each
    mostly imports, on one core): ``order: Popen``, output in pipes."""
    pytest.importorskip('mmpretrain')
    tests = selected(request)
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = {
        order: subprocess.Popen(
            [sys.executable, '-c', GET_MODEL.format(imports=imports)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        for order, imports in IMPORT_ORDERS.items()
        if f'test_get_model_by_name_either_import_order[{order}]' in tests}
    yield procs
    for proc in procs.values():  # one no test waited for
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize('order', list(IMPORT_ORDERS))
def test_get_model_by_name_either_import_order(order, get_model_runs):
    """``import fcvit_mm`` does not import mmpretrain itself; whichever
    comes first, the FCViT models are known to mmpretrain by name."""
    proc = get_model_runs[order]
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f'{IMPORT_ORDERS[order]}:\n{out[-5000:]}'
    assert 'built ImageClassifier 14701832' in out


# --------------------------------------------------------------------------
# a wheel: what it carries, and what works from it alone
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """A wheel built from a copy of the sources (the build writes
    fcvit_mm/.mim/ into the tree it builds)."""
    src = tmp_path_factory.mktemp('src')
    for item in BUILD_ITEMS:
        path = osp.join(ROOT, item)
        if osp.isdir(path):
            shutil.copytree(path, src / item, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc', '.mim'))
        else:
            shutil.copy(path, src / item)
    dist = tmp_path_factory.mktemp('dist')
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index',
         '--no-build-isolation', '--disable-pip-version-check', '-q',
         str(src), '-w', str(dist)], cwd=str(dist), env=dict(os.environ))
    found = glob.glob(str(dist / 'fcvit_mm-*.whl'))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope='module')
def installed(wheel, tmp_path_factory):
    """The wheel installed with --target into a folder of its own."""
    site = str(tmp_path_factory.mktemp('site'))
    run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index',
         '--disable-pip-version-check', '-q', '--target', site, wheel],
        cwd=site, env=dict(os.environ))
    # the folder alone on the path: no source checkout reachable
    env = dict(os.environ, PYTHONPATH=site, OMP_NUM_THREADS='1')
    return dict(site=site, env=env)


def test_wheel_carries_configs_tools_index_license(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    sources = [osp.relpath(p, ROOT) for p in glob.glob(
        osp.join(ROOT, 'configs', '**', '*.*'), recursive=True)
        if p.endswith(('.py', '.yml'))]
    sources += ['model-index.yml', 'tools/train.py', 'tools/test.py',
                'tools/dist_train.sh', 'tools/model_converters/fcvit_to_mm.py']
    missing = [s for s in sources if f'fcvit_mm/.mim/{s}' not in names]
    assert not missing, missing
    assert 'fcvit_mm/engine/distributed.py' in names
    licenses = [n for n in names if n.endswith('dist-info/licenses/LICENSE')]
    assert licenses, sorted(n for n in names if 'dist-info' in n)
    with zipfile.ZipFile(wheel) as zf:
        assert 'Apache License' in zf.read(licenses[0]).decode()
        assert b'/work/' not in zf.read('fcvit_mm/.mim/model-index.yml')


#: what the installed package holds besides fcvit_mm/.mim/: what a
#: training, test, inference or deployment job imports
PACKAGE_PARTS = {'__init__.py', 'internals.py', 'models', 'engine', 'deploy',
                 'utils', 'datasets'}


def test_wheel_holds_what_a_job_imports(wheel):
    """No analysis code, no test harness in the installed package (the
    tools, with their shared code, travel under .mim/ as configs do)."""
    with zipfile.ZipFile(wheel) as zf:
        package = {n: zf.read(n).decode() for n in zf.namelist()
                   if n.startswith('fcvit_mm/') and
                   not n.startswith('fcvit_mm/.mim/')}
    parts = {n.split('/')[1] for n in package}
    assert parts == PACKAGE_PARTS, sorted(parts ^ PACKAGE_PARTS)
    harness = [n for n, text in package.items() if n.endswith('.py') and (
        re.search(r'^\s*(import|from) (pytest|tools)\b', text, re.M) or
        "sys.modules['mmcv" in text)]
    assert not harness, harness
    assert 'fcvit_mm/datasets/shapes.py' in package  # the demo's data
    assert 'fcvit_mm/utils/config.py' in package
    with zipfile.ZipFile(wheel) as zf:
        assert 'fcvit_mm/.mim/tools/analysis/lib/gpu_check.py' in \
            zf.namelist()


def test_the_installed_package_runs_without_the_tools(installed):
    """From the wheel alone: the demo's data generator and the config
    loader import from the installed package; no analysis code, test
    harness or tools package is installed."""
    site = installed['site']
    code = (
        'import fcvit_mm.datasets, fcvit_mm.utils.config\n'
        'from fcvit_mm.datasets import make_shapes_dataset\n'
        'from fcvit_mm.utils.config import load_task_config\n'
        'print(fcvit_mm.datasets.__file__, fcvit_mm.utils.config.__file__)\n')
    out = run([sys.executable, '-c', code], cwd=site, env=installed['env'])
    assert out.split() == [
        osp.join(site, 'fcvit_mm', 'datasets', '__init__.py'),
        osp.join(site, 'fcvit_mm', 'utils', 'config.py')], out
    for gone in (('fcvit_mm', 'analysis'), ('fcvit_mm', 'testing'),
                 ('tools', )):
        assert not osp.exists(osp.join(site, *gone)), gone


@pytest.mark.slow
def test_get_model_from_the_wheel(installed):
    """mmpretrain finds the FCViT models in the installed package's .mim/
    (imported first, as a user would: mmpretrain)."""
    pytest.importorskip('mmpretrain')
    site = installed['site']
    code = (
        'import os.path as osp, sys\n'
        'import mmpretrain, fcvit_mm\n'
        f'assert fcvit_mm.__file__.startswith({site!r}), fcvit_mm.__file__\n'
        'from mmpretrain import get_model\n'
        'from mmpretrain.apis import ModelHub\n'
        'config = ModelHub.get("fcvit-tiny_8xb128_in1k").config.filename\n'
        f'assert config.startswith(osp.join({site!r}, "fcvit_mm", ".mim")),'
        ' config\n'
        'model = get_model("fcvit-tiny_8xb128_in1k")\n'
        'print("params", sum(p.numel() for p in model.parameters()))\n')
    out = run([sys.executable, '-c', code], cwd=site, env=installed['env'])
    assert 'params 4784752' in out


def test_mim_search_lists_our_models(installed):
    """``mim search fcvit_mm`` (openmim) reads the installed package's
    model index: every model of the three metafiles is listed."""
    pytest.importorskip('mim')
    out = run([sys.executable, '-m', 'mim', 'search', 'fcvit_mm'],
              cwd=installed['site'], env=installed['env'])
    for task in TASKS:
        for m in metafile(task)['Models']:
            assert m['Name'].lower() in out.lower(), (m['Name'], out[-3000:])
