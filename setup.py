"""fcvit_mm: FCViT as a backbone of the OpenMMLab 2.x stack.

torch and mmcv are deliberately not install requirements: mmcv must be built
against the local torch (``tools/install.sh`` does it once per machine), and a
user who already has a working torch + mmcv can ``pip install -e .`` without
anything being rebuilt.
"""
from setuptools import find_packages, setup

setup(
    name='fcvit_mm',
    version='0.1.0',
    description='FCViT (A Close Look at Spatial Modeling: From Attention to '
    'Convolution) for mmdet, mmsegmentation and mmpretrain',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.8',
    packages=find_packages(include=['fcvit_mm', 'fcvit_mm.*']),
    install_requires=['mmengine>=0.10.0'],
    extras_require={
        'all': ['mmdet>=3.3.0', 'mmsegmentation>=1.2.2', 'mmpretrain>=1.2.0',
                'ftfy', 'regex'],
        'tests': ['pytest', 'pytest-timeout', 'hypothesis'],
    },
    license='Apache-2.0',
    zip_safe=False,
)
