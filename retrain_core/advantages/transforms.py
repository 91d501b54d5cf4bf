"""Token-level transforms of SPEC §4.3–4.5 (GTPO, HICRA, SEPA pooling) and step statistics.

All functions take padded [N, T] tensors and a completion mask; per-completion means are
masked sums over T, so padding never changes a result. Masks may be bool or already
float (0/1): selection is done by multiplying with a 0/1 float mask, because on CPU a
multiply is ~40× faster than `torch.where`/`masked_fill` with a bool mask.
Callers pass uncertainties that are finite (the pipeline sanitises them first).
"""

from __future__ import annotations

import torch

from .uncertainty import UNCERTAINTY_CAP

GTPO_MEAN_FLOOR = 1e-7  # below this mean uncertainty GTPO leaves the advantage alone
GTPO_EPS = 1e-8

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


def as_weight(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A 0/1 float mask of `dtype` (bool masks are converted, float ones pass through)."""
    return mask if mask.dtype == dtype else mask.to(dtype)


def masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean of `values` over `mask` ([N]) and the per-row count; 0 for empty rows."""
    weight = as_weight(mask, values.dtype)
    counts = weight.sum(dim=1)
    sums = (values * weight).sum(dim=1)
    return sums / counts.clamp(min=1), counts


def gtpo_token_advantages(
    episode_adv: torch.Tensor, uncertainty: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """GTPO: A · max(0, 1 + β(u_t/(ū + 1e-8) − 1)); A itself when β = 0 or ū < 1e-7."""
    weight = as_weight(mask, uncertainty.dtype)
    adv = episode_adv.to(uncertainty.dtype)[:, None]
    if beta == 0:
        return adv * weight
    u = torch.clamp(uncertainty, max=UNCERTAINTY_CAP) * weight
    mean_u, _ = masked_row_mean(u, weight)
    # 1 + β(u/(ū+ε) − 1) rearranged as u·(β/(ū+ε)) + (1 − β): fewer passes over [N, T].
    scale = beta / (mean_u + GTPO_EPS)
    offset = torch.full_like(mean_u, 1.0 - beta)
    # Rows whose mean uncertainty is ~0 get weight 1 on every token: scale 0, offset 1.
    flat = mean_u < GTPO_MEAN_FLOOR
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    offset = torch.where(flat, torch.ones_like(offset), offset)
    weights = torch.addcmul(offset[:, None], u, scale[:, None]).clamp_(min=0.0)
    return weights.mul_(adv * weight)


def apply_hicra(token_adv: torch.Tensor, planning_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """HICRA: A_t + α|A_t| on planning tokens, unchanged elsewhere.

    α must lie in [0, 1]: beyond 1 a negative advantage would change sign.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"hicra.alpha must be in [0, 1] (a larger α flips negative advantages), got {alpha!r}")
    return token_adv + alpha * token_adv.abs() * as_weight(planning_mask, token_adv.dtype)


def sepa_pool(
    uncertainty: torch.Tensor, mask: torch.Tensor, planning_mask: torch.Tensor, sepa_lambda: float
) -> torch.Tensor:
    """SEPA: execution tokens move to λ·μ_exec + (1−λ)·u_t; planning tokens unchanged."""
    lam = min(max(float(sepa_lambda), 0.0), 1.0)
    if lam == 0.0:
        return uncertainty
    execution = as_weight(mask, uncertainty.dtype) * (1.0 - as_weight(planning_mask, uncertainty.dtype))
    mu_exec, _ = masked_row_mean(uncertainty, execution)
    # u·(1 − λe) + λμe with e ∈ {0, 1}: exactly u off execution tokens and exactly μ at λ = 1.
    # Rows without execution tokens have e = 0 everywhere, so they stay unchanged.
    keep = 1.0 - lam * execution
    return torch.addcmul(uncertainty * keep, execution, (lam * mu_exec)[:, None])


def _sums(values: torch.Tensor, weight: torch.Tensor) -> tuple[float, float, float]:
    """Count, sum and sum of squares (accumulated in float64) of the selected entries."""
    chosen = values * weight
    f64 = torch.float64
    return (
        float(weight.sum(dtype=f64).item()),
        float(chosen.sum(dtype=f64).item()),
        float((chosen * chosen).sum(dtype=f64).item()),
    )


def _mean_var(count: float, total: float, squares: float) -> tuple[float, float]:
    """Mean and population variance from sums (0.0, 0.0 when nothing was selected)."""
    if count == 0:
        return 0.0, 0.0
    mean = total / count
    return mean, max(squares / count - mean * mean, 0.0)


def uncertainty_stats(
    raw: torch.Tensor, pooled: torch.Tensor, mask: torch.Tensor, planning_mask: torch.Tensor
) -> dict[str, float]:
    """Step statistics of §4.7, named as metrics.jsonl names them ("surprisal" whatever the kind).

    Computed over every completion token of the step, skipped groups included: they are
    the model's uncertainty all the same, and the SEPA auto schedule wants all of it.
    Sums are float64, so E[x²] − E[x]² is exact enough for values capped at 50.
    """
    weight = as_weight(mask, raw.dtype)
    planning = weight * as_weight(planning_mask, raw.dtype)
    stats: dict[str, float] = {}
    for suffix, values in (("", raw), ("_pooled", pooled)):
        if suffix and values is raw:  # no pooling happened: the "after" figures are the same
            for key in ("exec", "plan"):
                stats[f"{key}_surprisal_mean_pooled"] = stats[f"{key}_surprisal_mean"]
                stats[f"{key}_surprisal_var_pooled"] = stats[f"{key}_surprisal_var"]
            continue
        every = _sums(values, weight)
        plan = _sums(values, planning)
        execution = tuple(a - b for a, b in zip(every, plan))
        for key, sums in (("exec", execution), ("plan", plan)):
            mean, var = _mean_var(*sums)
            stats[f"{key}_surprisal_mean{suffix}"] = mean
            stats[f"{key}_surprisal_var{suffix}"] = var
    total = float(weight.sum().item())
    stats["planning_token_fraction"] = float(planning.sum().item()) / total if total else 0.0
    return {k: stats[k] for k in STAT_KEYS}
