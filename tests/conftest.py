import os
import os.path as osp
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA = osp.join(ROOT, 'tests', 'data')
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# tests are small: keep them from fighting over the two cores
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


@pytest.fixture(scope='session')
def golden():
    """The reference implementation's outputs for a mini FCViT (see
    tests/data/README.md)."""
    from golden_data import load_golden
    return load_golden(osp.join(DATA, 'fcvit_mini_golden.pth'))
