# fcvit-mm: `make test` sets everything up (once per machine) and runs the suite.
# STACK=onedl: the onedl-* packages (requirements/constraints-onedl.txt),
# in their own environment
STACK   ?= openmmlab
SUFFIX  := $(if $(filter onedl,$(STACK)),-onedl,)
VENV    ?= .venv$(SUFFIX)
PYTHON  := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test test-fast lint clean-venv

install:
	STACK=$(STACK) VENV=$(VENV) bash tools/install.sh

test: install
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

# the unit tier: the tests not marked slow (pytest.ini)
test-fast: install
	$(PYTHON) -m pytest tests -m "not slow" $(PYTEST_ARGS)

# the lint (ruff.toml): pycodestyle and pyflakes rules at 79 columns
lint: install
	$(PYTHON) -m ruff check .

clean-venv:
	rm -rf $(VENV)

# The main job on generated data: TASK=det (Mask R-CNN, default), seg or cls.
TASK ?= det
.PHONY: demo
demo: install
	$(PYTHON) tools/demo.py --task $(TASK)

# ONNX export, ONNX Runtime and OpenVINO (docs/deployment.md); not needed
# for training.
.PHONY: install-deploy
install-deploy: install
	$(PYTHON) -m pip install -c requirements/constraints$(SUFFIX).txt -r requirements/deploy.txt -r requirements/openvino.txt
