# Quick start: `make demo` runs the end-to-end compression, `make test` runs the test suite.
# Both create a local virtual environment in .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow sanity bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel first, so that nothing pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,demo]"
	# timm and torchvision without their dependencies (torchvision would replace the CPU torch; see tests/thirdparty.py)
	$(PY) -m pip install --quiet --no-deps timm==1.0.31 torchvision==0.28.0
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m only_train_once.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

sanity: $(STAMP)
	$(PY) -m sanity_check

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) cache outputs demo_output .pytest_cache
