# Quickstart targets. `make test` and `make demo` create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
# The torch build installed into the venv first. CPU machines keep the default; GPU users pick
# their build, e.g. `make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dvfl-installed

.PHONY: venv test test-slow test-floors demo clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test,plot]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# The oldest zarr and PyAV that setup.cfg allows, each in a throwaway venv (also in test-slow).
test-floors: $(STAMP)
	$(PY) -m pytest -m slow tests/test_floors.py

# The whole pipeline on synthetic videos into demo/ (docs/demo.md); after a kill, run it again
# and it continues. Options: make demo DEMO_ARGS="--seeds 0,1,2 --out other".
demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
