# fcvit-mm: `make test` sets everything up (once per machine) and runs the suite.
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test clean-venv

install:
	VENV=$(VENV) bash tools/install.sh

test: install
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
