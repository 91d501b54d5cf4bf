"""Synthetic PEFT adapters for tests and bench/squeeze.py (no model download needed)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from retrain_core.squeeze.adapter import CONFIG_NAME, SAFETENSORS_NAME

# Qwen3-4B projection shapes (in_features, out_features): hidden 2560, 32 query heads and
# 8 key/value heads of 128, intermediate 9728, 36 layers.
QWEN3_4B_LAYERS = 36
QWEN3_4B_SHAPES: dict[str, tuple[int, int]] = {
    "self_attn.q_proj": (2560, 4096),
    "self_attn.k_proj": (2560, 1024),
    "self_attn.v_proj": (2560, 1024),
    "self_attn.o_proj": (4096, 2560),
    "mlp.gate_proj": (2560, 9728),
    "mlp.up_proj": (2560, 9728),
    "mlp.down_proj": (9728, 2560),
}


def write_adapter(directory, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], rank: int,
                  alpha: float | None = None, extra_config: dict | None = None,
                  prefix: str = "base_model.model.") -> Path:
    """Write {module: (A, B)} as a PEFT adapter directory (saved-format key names)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for module, (a, b) in pairs.items():
        tensors[f"{prefix}{module}.lora_A.weight"] = a.contiguous()
        tensors[f"{prefix}{module}.lora_B.weight"] = b.contiguous()
    from safetensors.torch import save_file

    save_file(tensors, str(directory / SAFETENSORS_NAME), metadata={"format": "pt"})
    targets = sorted({module.rsplit(".", 1)[-1] for module in pairs})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank,
              "lora_alpha": 2 * rank if alpha is None else alpha, "lora_dropout": 0.0,
              "bias": "none", "target_modules": targets, "base_model_name_or_path": ""}
    config.update(extra_config or {})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def qwen3_4b_like_adapter(directory, rank: int = 128, layers: int = QWEN3_4B_LAYERS,
                          seed: int = 0, decay: float = 20.0) -> Path:
    """A rank-`rank` adapter with Qwen3-4B shapes (fp32, ~1 GB at rank 128).

    B's columns are scaled by exp(-i/decay) so the spectrum of B·A decays the way a trained
    adapter's does (and the variance table has something to say).
    """
    gen = torch.Generator().manual_seed(seed)
    column_scale = torch.exp(-torch.arange(rank, dtype=torch.float32) / decay) * 0.01
    pairs = {}
    for layer in range(layers):
        for name, (n_in, n_out) in QWEN3_4B_SHAPES.items():
            a = torch.randn(rank, n_in, generator=gen) / n_in ** 0.5
            b = torch.randn(n_out, rank, generator=gen) * column_scale
            pairs[f"model.layers.{layer}.{name}"] = (a, b)
    return write_adapter(directory, pairs, rank,
                         extra_config={"base_model_name_or_path": "Qwen/Qwen3-4B-Instruct-2507"})
