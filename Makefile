# Two commands on a fresh machine: `make demo` (reconstruct the bundled sample) and `make test`.
# Each creates or refreshes the virtual environment in .venv first, with the optional extras `viewer` (viser,
# ~5 s to install) and `ray` (~10 s, 250 MB), so that the viewer's and Ray's tests run too, and `bench`
# (matplotlib, for `make bench`'s plot).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sfm3r-installed
# The CPU build of torch on this machine; GPU users install torch first, then `pip install -e .`.
TORCH_PIN ?= torch==2.13.0

.PHONY: env test test-all demo bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_PIN)" -e ".[dev,viewer,ray,bench]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/sfm3r reconstruct sample/images demo_out
	$(VENV)/bin/sfm3r evaluate demo_out sample/gt

bench: $(STAMP)
	$(PY) benchmarks/run_quick.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
