# fcvit-mm: `make test` sets everything up (once per machine) and runs the suite.
# STACK=onedl: the onedl-* packages (requirements/constraints-onedl.txt),
# in their own environment
STACK   ?= openmmlab
SUFFIX  := $(if $(filter onedl,$(STACK)),-onedl,)
VENV    ?= .venv$(SUFFIX)
PYTHON  := $(VENV)/bin/python
PYTEST_ARGS ?=
# the suite runs on JOBS pytest processes (pytest-xdist), a test file per
# process at a time (its module fixtures start its background runs);
# JOBS=1: one process, no xdist
JOBS    ?= 2
XDIST   := $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadfile,)

.PHONY: install test test-fast lint clean-venv

install:
	STACK=$(STACK) VENV=$(VENV) bash tools/install.sh

test: install
	$(PYTHON) -m pytest tests $(XDIST) $(PYTEST_ARGS)

# the unit tier: the tests not marked slow (pytest.ini)
test-fast: install
	$(PYTHON) -m pytest tests -m "not slow" $(XDIST) $(PYTEST_ARGS)

# the lint (ruff.toml): pycodestyle and pyflakes rules at 79 columns
lint: install
	$(PYTHON) -m ruff check .

clean-venv:
	rm -rf $(VENV)

# The main job on generated data: TASK=det (Mask R-CNN, default), seg or cls;
# PRECISION=auto (bf16 mixed precision where the CPU runs bf16 natively,
# float32 elsewhere), bf16 or fp32.
TASK ?= det
PRECISION ?= auto
.PHONY: demo
demo: install
	$(PYTHON) tools/demo.py --task $(TASK) --precision $(PRECISION)

# ONNX export, ONNX Runtime and OpenVINO (docs/deployment.md); not needed
# for training.
.PHONY: install-deploy
install-deploy: install
	$(PYTHON) -m pip install -c requirements/constraints$(SUFFIX).txt -r requirements/deploy.txt -r requirements/openvino.txt
