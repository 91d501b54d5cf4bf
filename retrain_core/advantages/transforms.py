"""Token-level transforms (GTPO weighting, HICRA, SEPA pooling) and step statistics.

All functions take padded [N, T] tensors and a completion mask; per-completion means are
masked sums over T, so padding never changes a result. Masks may be bool or already
float 0/1: selection multiplies by a 0/1 float mask, because on CPU a multiply is much
faster than `torch.where`/`masked_fill` with a bool mask. The pipeline calls the
`*_clean` variants on uncertainties it has already capped and zeroed off the mask.
"""

from __future__ import annotations

import math

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


def clean_uncertainty(uncertainty: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Capped at 50, NaN → 0, exactly 0 off the mask: what the `*_clean` functions expect."""
    return torch.nan_to_num(uncertainty, nan=0.0).clamp_(max=UNCERTAINTY_CAP).mul_(weight)


# --- GTPO ------------------------------------------------------------------------------------

def gtpo_clean(episode_adv: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, beta: float) -> torch.Tensor:
    """GTPO on a clean uncertainty (see module docstring); one [N, T] allocation."""
    adv = episode_adv.to(u.dtype)[:, None]
    if beta == 0:
        return adv * weight
    mean_u = u.sum(dim=1) / weight.sum(dim=1).clamp(min=1)
    # 1 + β(u/(ū+ε) − 1) rearranged as u·(β/(ū+ε)) + (1 − β): one pass over [N, T].
    # Rows whose mean uncertainty is ~0 get weight 1 everywhere: scale 0, offset 1.
    flat = mean_u < GTPO_MEAN_FLOOR
    scale = torch.where(flat, torch.zeros_like(mean_u), beta / (mean_u + GTPO_EPS))
    offset = torch.where(flat, torch.ones_like(mean_u), torch.full_like(mean_u, 1.0 - beta))
    weights = torch.addcmul(offset[:, None], u, scale[:, None]).clamp_(min=0.0)
    return weights.mul_(adv).mul_(weight)


def gtpo_token_advantages(
    episode_adv: torch.Tensor, uncertainty: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """GTPO: A · max(0, 1 + β(u_t/(ū + 1e-8) − 1)); A itself when β = 0 or ū < 1e-7."""
    weight = as_weight(mask, uncertainty.dtype)
    return gtpo_clean(episode_adv, clean_uncertainty(uncertainty, weight), weight, beta)


# --- HICRA -----------------------------------------------------------------------------------

def check_hicra_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"hicra.alpha must be in [0, 1] (a larger α flips negative advantages), got {alpha!r}"
        )


def apply_hicra(token_adv: torch.Tensor, planning_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """HICRA: A_t + α|A_t| on planning tokens, unchanged elsewhere (a new tensor).

    α must lie in [0, 1]: beyond 1 a negative advantage would change sign.
    """
    check_hicra_alpha(alpha)
    return torch.addcmul(token_adv, token_adv.abs(), as_weight(planning_mask, token_adv.dtype), value=alpha)


def apply_hicra_(token_adv: torch.Tensor, plan_weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """In-place HICRA on the pipeline's own buffer."""
    check_hicra_alpha(alpha)
    return token_adv.addcmul_(token_adv.abs(), plan_weight, value=alpha)


# --- SEPA pooling ----------------------------------------------------------------------------

def sepa_pool_clean(u: torch.Tensor, execution: torch.Tensor, sepa_lambda: float) -> torch.Tensor:
    """SEPA on a clean uncertainty with a 0/1 float execution mask."""
    lam = min(max(float(sepa_lambda), 0.0), 1.0)
    if lam == 0.0:
        return u
    exec_u = u * execution
    mu_exec = exec_u.sum(dim=1) / execution.sum(dim=1).clamp(min=1)
    # u·(1 − λe) + λμe with e ∈ {0, 1}: exactly u off execution tokens and exactly μ at λ = 1.
    # Rows without execution tokens have e = 0 everywhere, so they stay unchanged.
    pooled = torch.mul(execution, -lam).add_(1.0).mul_(u)
    return pooled.addcmul_(execution, (lam * mu_exec)[:, None])


def sepa_pool(
    uncertainty: torch.Tensor, mask: torch.Tensor, planning_mask: torch.Tensor, sepa_lambda: float
) -> torch.Tensor:
    """SEPA: execution tokens move to λ·μ_exec + (1−λ)·u_t; planning tokens unchanged."""
    if min(max(float(sepa_lambda), 0.0), 1.0) == 0.0:
        return uncertainty
    dtype = uncertainty.dtype
    execution = as_weight(mask, dtype) * (1.0 - as_weight(planning_mask, dtype))
    u = torch.nan_to_num(uncertainty, nan=0.0)
    pooled = sepa_pool_clean(u * execution, execution, sepa_lambda)
    # Off the execution tokens the input passes through untouched.
    return torch.where(execution.bool(), pooled, uncertainty)


# --- statistics ------------------------------------------------------------------------------

def _moments(values: torch.Tensor, plan_weight: torch.Tensor) -> tuple[float, ...]:
    """Σx and Σx² over all completion tokens and over planning tokens (float64 totals).

    `values` is 0 off the completion mask. Rows are reduced in float32 (≤ T terms each)
    and the row totals summed in float64.
    """
    f64 = torch.float64
    planned = values * plan_weight
    squares = (values * values).sum(dim=1).sum(dtype=f64)
    plan_squares = (planned * values).sum(dim=1).sum(dtype=f64)
    return (
        float(values.sum(dtype=f64).item()),
        float(squares.item()),
        float(planned.sum(dtype=f64).item()),
        float(plan_squares.item()),
    )


def _mean_var(count: float, total: float, squares: float) -> tuple[float, float]:
    """Mean and population variance from sums; NaN, NaN when nothing was selected.

    NaN means "no observation", not "variance 0": a step whose tokens are all planning
    tokens (or whose completions are all empty) must not pull the SEPA auto EMA toward 0.
    metrics.jsonl writes it as null."""
    if count == 0:
        return math.nan, math.nan
    mean = total / count
    return mean, max(squares / count - mean * mean, 0.0)


def uncertainty_stats(
    raw: torch.Tensor, pooled: torch.Tensor, mask: torch.Tensor, planning_mask: torch.Tensor,
) -> dict[str, float]:
    """Step statistics, named as metrics.jsonl names them ("surprisal" whatever the kind).

    `raw` and `pooled` must be 0 off the mask (as the pipeline's are). Computed over every
    completion token of the step, skipped groups included: they are the model's
    uncertainty all the same, and the SEPA auto schedule wants all of it.
    """
    weight = as_weight(mask, raw.dtype)
    plan_weight = as_weight(planning_mask, raw.dtype) * weight
    n_all = float(weight.sum(dtype=torch.float64).item())
    n_plan = float(plan_weight.sum(dtype=torch.float64).item())
    stats: dict[str, float] = {}
    for suffix, values in (("", raw), ("_pooled", pooled)):
        if suffix and values is raw:  # no pooling happened: the "after" figures are the same
            for key in ("exec", "plan"):
                stats[f"{key}_surprisal_mean_pooled"] = stats[f"{key}_surprisal_mean"]
                stats[f"{key}_surprisal_var_pooled"] = stats[f"{key}_surprisal_var"]
            continue
        s1, s2, p1, p2 = _moments(values, plan_weight)
        for key, sums in (("exec", (n_all - n_plan, s1 - p1, s2 - p2)), ("plan", (n_plan, p1, p2))):
            mean, var = _mean_var(*sums)
            stats[f"{key}_surprisal_mean{suffix}"] = mean
            stats[f"{key}_surprisal_var{suffix}"] = var
    stats["planning_token_fraction"] = n_plan / n_all if n_all else 0.0
    return {k: stats[k] for k in STAT_KEYS}
