# One-command set-up. Works on a CPU box (installs the CPU torch wheel first) and on a
# GPU box (an existing CUDA torch in the interpreter is kept: the venv sees system site
# packages only when RETRAIN_SYSTEM_TORCH=1).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test bench clean

$(BIN)/python:
	@if [ "$$RETRAIN_SYSTEM_TORCH" = "1" ]; then $(PY) -m venv --system-site-packages $(VENV); else $(PY) -m venv $(VENV); fi
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

clean:
	rm -rf $(VENV) .pytest_cache
