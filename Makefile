# The README's commands. Each target creates .venv (CPU PyTorch) on first use.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.xnorkit-installed
# Any source change (also a new Python module: the editable install maps files at install time)
# re-runs the install; CMake rebuilds only what changed.
CSRC    := $(shell find csrc include bindings src -type f -not -name "*.pyc" 2>/dev/null) CMakeLists.txt pyproject.toml
PYTEST_ARGS ?=

.PHONY: setup demo test test-all bench clean

$(STAMP): $(CSRC)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of PyTorch first, so nothing below pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q "scikit-build-core>=0.10" "nanobind>=2.0"
	$(BIN)/pip install -q --no-build-isolation -e '.[test,bench,gpu]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo_mnist.py

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bgemm.py

clean:
	rm -rf build $(VENV) .pytest_cache
