"""Episode (per-completion) advantages from the rewards of each prompt group (GRPO, MaxRL),
vectorised over groups.

Groups are given by an id per completion; they may come in any order and have unequal
sizes. Every group statistic is a scatter (index_add / scatter_reduce) over the dense
group index, so there is no Python loop over groups or completions.
"""

from __future__ import annotations

import torch

MAXRL_EPS = 1e-6  # denominator guard and "no successes" threshold of MaxRL
SKIP_TOL = 1e-6  # rewards equal within this carry no signal
CORRECT_THRESHOLD = 0.5  # a completion is correct when its reward exceeds this


def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense group index in [0, num_groups) per completion, and the number of groups."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max().item()) + 1 if inverse.numel() else 0
    return inverse, num_groups


def group_mean(values: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Mean of `values` over each group, broadcast back to one entry per completion."""
    sums = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, index, values)
    counts = torch.zeros_like(sums).index_add_(0, index, torch.ones_like(values))
    return (sums / counts)[index]


def skipped_completions(rewards: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """True for completions whose group's rewards are all equal (within SKIP_TOL)."""
    if num_groups == 0:
        return torch.zeros(0, dtype=torch.bool, device=rewards.device)
    hi = torch.full((num_groups,), float("-inf"), dtype=rewards.dtype, device=rewards.device)
    lo = torch.full_like(hi, float("inf"))
    hi = hi.scatter_reduce(0, index, rewards, reduce="amax")
    lo = lo.scatter_reduce(0, index, rewards, reduce="amin")
    return (hi - lo <= SKIP_TOL)[index]


def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """GRPO: A_i = r_i − mean(r) within the group."""
    index, num_groups = group_index(group_ids)
    return rewards - group_mean(rewards, index, num_groups)


def maxrl_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """MaxRL: (r_i − μ)/(μ + 1e-6), all zeros for a group with μ ≤ 1e-6."""
    index, num_groups = group_index(group_ids)
    mu = group_mean(rewards, index, num_groups)
    adv = (rewards - mu) / (mu + MAXRL_EPS)
    return torch.where(mu <= MAXRL_EPS, torch.zeros_like(adv), adv)


EPISODE_MODES = {"grpo": grpo_advantages, "maxrl": maxrl_advantages}


def correct_rate(rewards: torch.Tensor) -> float:
    """Fraction of completions with reward > 0.5 (0.0 for an empty batch)."""
    if rewards.numel() == 0:
        return 0.0
    return float((rewards > CORRECT_THRESHOLD).double().mean().item())
