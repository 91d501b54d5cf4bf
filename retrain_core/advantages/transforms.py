"""Token-level transforms of SPEC §4.3–4.5 (GTPO, HICRA, SEPA pooling) and step statistics.

All functions take padded [N, T] tensors and a bool completion mask; per-completion
means are masked sums over T, so padding never changes a result.
"""

from __future__ import annotations

import torch

from .uncertainty import UNCERTAINTY_CAP

GTPO_MEAN_FLOOR = 1e-7  # below this mean uncertainty GTPO leaves the advantage alone
GTPO_EPS = 1e-8


def masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean of `values` over `mask` ([N]) and the per-row count; 0 for empty rows."""
    zeros = torch.zeros_like(values)
    sums = torch.where(mask, values, zeros).sum(dim=1)
    counts = mask.sum(dim=1).to(values.dtype)
    return sums / counts.clamp(min=1), counts


def gtpo_token_advantages(
    episode_adv: torch.Tensor, uncertainty: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """GTPO: A · max(0, 1 + β(u_t/(ū + 1e-8) − 1)); A itself when β = 0 or ū < 1e-7."""
    adv = episode_adv.to(uncertainty.dtype)[:, None].expand_as(uncertainty)
    u = torch.where(mask, torch.clamp(uncertainty, max=UNCERTAINTY_CAP), torch.zeros_like(uncertainty))
    mean_u, _ = masked_row_mean(u, mask)
    if beta == 0:
        out = adv.clone()
    else:
        weights = torch.clamp(1.0 + beta * (u / (mean_u[:, None] + GTPO_EPS) - 1.0), min=0.0)
        flat = (mean_u < GTPO_MEAN_FLOOR)[:, None]
        out = torch.where(flat, adv, adv * weights)
    return torch.where(mask, out, torch.zeros_like(out))


def apply_hicra(token_adv: torch.Tensor, planning_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """HICRA: A_t + α|A_t| on planning tokens, unchanged elsewhere."""
    return torch.where(planning_mask, token_adv + alpha * token_adv.abs(), token_adv)


def sepa_pool(
    uncertainty: torch.Tensor, mask: torch.Tensor, planning_mask: torch.Tensor, sepa_lambda: float
) -> torch.Tensor:
    """SEPA: execution tokens move to λ·μ_exec + (1−λ)·u_t; planning tokens unchanged."""
    lam = min(max(float(sepa_lambda), 0.0), 1.0)
    if lam == 0.0:
        return uncertainty
    execution = mask & ~planning_mask
    mu_exec, _ = masked_row_mean(uncertainty, execution)
    pooled = lam * mu_exec[:, None] + (1.0 - lam) * uncertainty
    # Rows without execution tokens have no `execution` entry, so they stay unchanged.
    return torch.where(execution, pooled, uncertainty)


def _mean_var(values: torch.Tensor, select: torch.Tensor) -> tuple[float, float]:
    """Mean and population variance over the selected entries (0.0, 0.0 when none)."""
    count = int(select.sum().item())
    if count == 0:
        return 0.0, 0.0
    chosen = values[select].double()
    mean = chosen.mean()
    var = ((chosen - mean) ** 2).mean()
    return float(mean.item()), float(var.item())


def uncertainty_stats(
    raw: torch.Tensor, pooled: torch.Tensor, mask: torch.Tensor, planning_mask: torch.Tensor
) -> dict[str, float]:
    """Step statistics of §4.7, named as metrics.jsonl names them ("surprisal" whatever the kind).

    Computed over every completion token of the step, skipped groups included: they are
    the model's uncertainty all the same, and the SEPA auto schedule wants all of it.
    """
    planning = mask & planning_mask
    execution = mask & ~planning_mask
    stats: dict[str, float] = {}
    for prefix, select in (("exec", execution), ("plan", planning)):
        mean, var = _mean_var(raw, select)
        stats[f"{prefix}_surprisal_mean"] = mean
        stats[f"{prefix}_surprisal_var"] = var
        mean, var = _mean_var(pooled, select)
        stats[f"{prefix}_surprisal_mean_pooled"] = mean
        stats[f"{prefix}_surprisal_var_pooled"] = var
    total = int(mask.sum().item())
    stats["planning_token_fraction"] = float(planning.sum().item()) / total if total else 0.0
    return stats


STAT_KEYS = (
    "exec_surprisal_mean",
    "exec_surprisal_var",
    "exec_surprisal_mean_pooled",
    "exec_surprisal_var_pooled",
    "plan_surprisal_mean",
    "plan_surprisal_var",
    "plan_surprisal_mean_pooled",
    "plan_surprisal_var_pooled",
    "planning_token_fraction",
)
