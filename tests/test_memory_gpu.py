"""Memory budgets on a real GPU (bench/gpu_check.sh runs these): chunked sampling stays
under its budget, checkpointing is on by default and trains, peaks reach the metrics, and
a real CUDA out-of-memory becomes an error naming the phase, the step and the knob.

Skipped without a CUDA device; they fail instead when RETRAIN_REQUIRE_GPU=1."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from retrain_core.train import memory

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parent.parent

if not torch.cuda.is_available():
    if os.environ.get("RETRAIN_REQUIRE_GPU") == "1":
        raise RuntimeError("RETRAIN_REQUIRE_GPU=1 but torch sees no CUDA device")
    pytest.skip("needs a CUDA device (bench/gpu_check.sh runs these on a GPU machine)", allow_module_level=True)


@pytest.fixture(scope="module")
def qwen_tiny_folder(tmp_path_factory):
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from gpu_step import build_model_folder

    folder = tmp_path_factory.mktemp("qwen3_tiny")
    build_model_folder(REPO / "bench" / "configs" / "qwen3-tiny.json", torch.bfloat16, "cuda", folder)
    return folder


def backend_for(folder, **settings):
    from retrain_core.config.schema import Config
    from retrain_core.train.backend import LocalBackend

    cfg = Config()
    cfg.model.model, cfg.model.lora_rank, cfg.backend.devices = str(folder), 8, "cuda"
    cfg.training.max_tokens, cfg.training.temperature, cfg.training.top_p = 64, 1.0, 1.0
    for key, value in settings.items():
        setattr(cfg.inference if key == "sampling_memory_gb" else cfg.training, key, value)
    return LocalBackend(cfg)


def test_chunked_sampling_and_checkpointed_training_on_gpu(qwen_tiny_folder):
    backend = backend_for(qwen_tiny_folder)
    assert backend.checkpointing and backend.device.type == "cuda"  # "auto" on a GPU
    prompts = [" ".join(f"t{i}" for i in range(10 + k, 30 + k)) for k in range(4)]
    row = memory.sampling_bytes_per_row(backend.model.config, 2, 20, 64)
    backend.cfg.inference.sampling_memory_gb = 3.5 * row / memory.GIB  # 3 rows a chunk
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    rollouts = backend.sample(prompts, 4)
    assert rollouts.completion_ids.shape[0] == 16
    peak = torch.cuda.max_memory_allocated() - base
    assert peak < 16 * row  # all 16 rows at once would hold this much
    adv = torch.where(torch.arange(16) % 2 == 0, 1.0, -1.0)[:, None] * rollouts.mask.float().cpu()
    backend.cfg.training.micro_batch_tokens = 2 * (rollouts.prompt_ids.shape[1] + 64)
    stats = backend.train_step(rollouts, adv)
    assert stats["grad_norm"] > 0
    out = memory.memory_metrics()
    assert out["gpu_peak_allocated_mb"] > 0 and out["gpu_peak_reserved_mb"] >= out["gpu_peak_allocated_mb"]


def test_a_real_cuda_oom_names_phase_step_and_knob():
    from retrain_core.config.schema import Config
    from retrain_core.train.loop import Trainer

    trainer = SimpleNamespace(step=4, cfg=Config())
    free, _ = torch.cuda.mem_get_info()
    with pytest.raises(memory.OutOfMemoryInPhase) as info:
        Trainer.in_phase(trainer, "sampling", lambda: torch.empty(int(free * 4), dtype=torch.uint8, device="cuda"))
    assert "while sampling at step 4" in str(info.value) and "sampling_memory_gb" in str(info.value)
