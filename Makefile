# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
# `make demo` and `make test` work on a fresh machine: they create .venv from Python 3.10
# (.python-version selects it through pyenv) and install the package with its extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: env demo test test-fast bench clean

env: $(STAMP)

$(STAMP): setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 8) <= sys.version_info[:2] <= (3, 10) else "nnabla 1.39 needs Python 3.8-3.10; found " + sys.version.split()[0] + " (install 3.10, e.g. with pyenv)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[demo,test,examples,onnx]'
	$(PY) -m pip install -q --no-deps 'nnabla-converter==1.39.*'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.digits.demo

test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# each benchmark adds one record to benchmarks/results/<name>.jsonl; BENCHMARKS.md is generated
# from the records (latest table per benchmark, history below)
bench: $(STAMP)
	$(PY) benchmarks/bench_fit.py
	$(PY) benchmarks/bench_kmeans.py
	$(PY) benchmarks/bench_train_step.py
	$(PY) benchmarks/render.py

clean:
	rm -rf $(VENV) *.egg-info demo_output
