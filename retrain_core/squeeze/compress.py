"""Compress a LoRA adapter to rank k: the best rank-k approximation of every `B·A`.

With `Aᵀ = Q_A R_A`, `B = Q_B R_B` and the core SVD `R_B R_Aᵀ = U S Vᵀ`:
`B' = Q_B U_k √S_k` and `A' = √S_k V_kᵀ Q_Aᵀ`, so `B'A'` is the truncated SVD of `B·A`
(Eckart–Young). PEFT multiplies `B·A` by `lora_alpha / r` (or `/ √r` with rsLoRA), so the
new `lora_alpha` is scaled to keep that factor, and `B'A'` needs no rescaling.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from retrain_core.atomic import atomic_write, atomic_write_text

from .adapter import (
    CONFIG_NAME,
    SAFETENSORS_NAME,
    AdapterWeights,
    LoraModule,
    SqueezeError,
    adapter_files,
    find_modules,
    read_adapter_config,
)
from .svd import matrix_a, matrix_b, resolve_device


def truncated_factors(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') of shapes (rank, in), (out, rank) with B'A' the best rank-`rank` approx of B·A.

    Works in float64 on the tensors' device. When B·A has fewer than `rank` nonzero
    directions (in or out smaller than the rank), the extra rows/columns are zeros.
    """
    a, b = a.double(), b.double()
    q_a, r_a = torch.linalg.qr(a.mT)  # Aᵀ = Q_A R_A: (in, p), (p, r)
    q_b, r_b = torch.linalg.qr(b)  # B = Q_B R_B: (out, q), (q, r)
    u, s, vh = torch.linalg.svd(r_b @ r_a.mT, full_matrices=False)
    keep = min(rank, s.numel())
    root = s[:keep].sqrt()
    new_b = torch.zeros(b.shape[0], rank, dtype=torch.float64, device=b.device)
    new_a = torch.zeros(rank, a.shape[1], dtype=torch.float64, device=a.device)
    new_b[:, :keep] = q_b @ (u[:, :keep] * root)
    new_a[:keep] = (root[:, None] * vh[:keep]) @ q_a.mT
    return new_a, new_b


def scaled_alpha(alpha: float, source_rank: int, rank: int, rslora: bool) -> float | int:
    """lora_alpha for rank `rank` with the same PEFT scaling as `alpha` at `source_rank`."""
    factor = math.sqrt(rank / source_rank) if rslora else rank / source_rank
    value = alpha * factor
    return round(value) if abs(value - round(value)) < 1e-9 else value


def _peft_keys(module: LoraModule) -> tuple[str, str]:
    """Saved-format keys (no adapter name), which `PeftModel.from_pretrained` expects."""
    def strip(key: str, which: str) -> str:
        marker = f".lora_embedding_{which}" if module.embedding else f".lora_{which}"
        head = key[: key.index(marker)]
        return head + marker + ("" if module.embedding else ".weight")
    return strip(module.key_a, "A"), strip(module.key_b, "B")


def compress_adapter(path, rank: int, output_path, device: str = "cpu") -> Path:
    """Write the rank-`rank` compression of the adapter at `path` into `output_path`."""
    from safetensors.torch import save_file

    weights_path, config_path = adapter_files(path)
    if config_path is None:
        raise SqueezeError(f"{path}: no {CONFIG_NAME}; cannot write a loadable compressed adapter")
    config = read_adapter_config(config_path)
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise SqueezeError(f"{config_path}: adapters with rank_pattern/alpha_pattern are not "
                           "supported for compression (analysis works)")
    out = Path(output_path)
    if out.resolve() == weights_path.parent.resolve():
        raise SqueezeError(f"{out}: the output directory must differ from the source adapter")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise SqueezeError(f"compress_to: expected a positive integer rank, found {rank!r}")
    dev = resolve_device(device)
    tensors: dict[str, torch.Tensor] = {}
    with AdapterWeights(weights_path) as weights:
        modules = find_modules(weights)
        source_rank = max(m.rank for m in modules)
        declared = config.get("r", source_rank)
        if declared != source_rank:
            raise SqueezeError(f"{config_path}: r = {declared}, but {weights_path} holds "
                               f"rank {source_rank}")
        if rank > source_rank:
            raise SqueezeError(f"cannot compress to rank {rank}: the source rank is {source_rank} "
                               "(squeeze never writes a larger r)")
        lora_keys = set()
        for module in modules:
            a_raw, b_raw = weights.get(module.key_a), weights.get(module.key_b)
            lora_keys.update((module.key_a, module.key_b))
            new_a, new_b = truncated_factors(matrix_a(a_raw).to(dev), matrix_b(b_raw).to(dev), rank)
            key_a, key_b = _peft_keys(module)
            # Conv LoRA keeps its trailing kernel dims; dtype stays the source's.
            tensors[key_a] = new_a.reshape((rank, *a_raw.shape[1:])).to("cpu", a_raw.dtype)
            tensors[key_b] = new_b.reshape((b_raw.shape[0], rank, *b_raw.shape[2:])).to("cpu", b_raw.dtype)
        for key in weights.names():  # biases, modules_to_save, DoRA magnitudes: unchanged
            if key not in lora_keys:
                tensors[key] = weights.get(key).clone()
    alpha = config.get("lora_alpha", 8)
    new_config = dict(config, r=rank,
                      lora_alpha=scaled_alpha(alpha, source_rank, rank, bool(config.get("use_rslora"))))
    out.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(out / SAFETENSORS_NAME,
                 lambda tmp: save_file(contiguous, tmp, metadata={"format": "pt"}))
    atomic_write_text(out / CONFIG_NAME, json.dumps(new_config, indent=2) + "\n")
    return out
