# One-command set-up. On a CPU box it installs the CPU torch wheel first (a bare `torch`
# requirement would pull GBs of CUDA wheels). On a GPU box whose python already has a CUDA
# torch, the venv is created with --system-site-packages so that torch is kept.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test bench clean

$(BIN)/python:
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then \
	  echo "found a CUDA torch in $(PY): keeping it"; $(PY) -m venv --system-site-packages $(VENV); \
	else $(PY) -m venv $(VENV); fi
	$(BIN)/python -m pip install --upgrade pip wheel setuptools

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "keeping installed torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	else \
	  $(BIN)/python -m pip install "torch==$(TORCH_VERSION)"; \
	fi
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/retrain-tui configs/demo.toml

test: setup
	$(BIN)/python -m pytest -n 2 -q

bench: setup
	$(BIN)/python -m pip install -e ".[bench]"
	@echo "benchmarks: $(BIN)/python bench/<name>.py (see README)"

clean:
	rm -rf $(VENV) .pytest_cache
