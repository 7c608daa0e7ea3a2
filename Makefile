# Quickstart targets. `make test` and `make demo` create .venv themselves, with the exact versions
# in requirements/lock.txt (`make lock` rewrites it; see tools/lock.py).
PYTHON ?= python3
VENV ?= .venv
# The torch build, installed into each venv first. The package index decides which build a plain
# version is: PyPI serves CUDA builds on Linux x86_64 (gigabytes of nvidia-* packages); choose
# PyTorch's CPU wheels with their index, e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# and a CUDA build the same way (.../whl/cu128).
TORCH ?= torch==2.13.0
LOCK := requirements/lock.txt
# The extras the suite needs; every package they bring is in the lock.
EXTRAS := test,plot
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dvfl-installed
LATEST ?= .venv-latest

.PHONY: venv test test-slow test-floors test-latest lock demo clean

$(STAMP): setup.cfg pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) $(TORCH)
	$(PY) -m pip install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# The oldest zarr and PyAV that setup.cfg allows, each in a throwaway venv (also in test-slow).
test-floors: $(STAMP)
	$(PY) -m pytest -m slow tests/test_floors.py

# The newest release of every dependency that setup.cfg allows (no lock), in a throwaway venv,
# so that a release upstream that breaks dvfl is seen before users see it. torch stays the
# TORCH build: its newest release on PyPI is a CUDA build of several GB.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q $(TORCH)
	$(LATEST)/bin/python tools/lock.py torch-pin > $(LATEST)/torch-pin.txt
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager \
		-c $(LATEST)/torch-pin.txt -e ".[$(EXTRAS)]"
	$(LATEST)/bin/python tools/lock.py diff $(LOCK)
	$(LATEST)/bin/python -m pytest -m "not slow" -p no:cacheprovider

# Rewrite the lock from a fresh resolution of the newest versions setup.cfg allows.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q $(TORCH)
	.venv-lock/bin/python tools/lock.py torch-pin > .venv-lock/torch-pin.txt
	.venv-lock/bin/python -m pip install -q -c .venv-lock/torch-pin.txt ".[$(EXTRAS),s3]"
	.venv-lock/bin/python tools/lock.py write $(LOCK)
	rm -rf .venv-lock

# The whole pipeline on synthetic videos into demo/ (docs/demo.md); after a kill, run it again
# and it continues. Options: make demo DEMO_ARGS="--seeds 0,1,2 --out other".
demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(LATEST) .venv-lock build *.egg-info .pytest_cache
