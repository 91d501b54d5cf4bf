"""Per-token uncertainty of the sampled token (surprisal, predictive variance or Shannon
entropy), capped at 50, exactly 0 on padding."""

from __future__ import annotations

import torch

from retrain_core.registry import REGISTRY

UNCERTAINTY_CAP = 50.0

# Accepted spellings of the built-in kinds: the one alias table of retrain_core.registry.
UNCERTAINTY_ALIASES = REGISTRY.aliases("uncertainty")


def canonical_uncertainty_kind(kind: str) -> str | None:
    """The built-in kind `kind` names, or None when it is not a built-in (maybe a plugin)."""
    return REGISTRY.canonical("uncertainty", kind)


def surprisal(logprobs: torch.Tensor, mask: torch.Tensor, entropies=None) -> torch.Tensor:
    """−logprob of the sampled token."""
    return -logprobs


def predictive_variance(logprobs: torch.Tensor, mask: torch.Tensor, entropies=None) -> torch.Tensor:
    """p(1 − p) of the sampled token, p = exp(logprob) clipped to [0, 1].

    1 − p is computed as −expm1(logprob): near p ≈ 1 the subtraction 1 − exp(logprob)
    cancels (float32 loses ~1e-3 relative at logprob = −1e-4). A logprob slightly above 0
    (rounding in a sampler) gives 0, never a negative variance."""
    p = torch.exp(logprobs).clamp_(0.0, 1.0)
    return p.mul_(torch.expm1(logprobs).neg_().clamp_(0.0, 1.0))


def shannon_entropy(logprobs: torch.Tensor, mask: torch.Tensor, entropies=None) -> torch.Tensor:
    """Entropy of the full next-token distribution, computed by the trainer's forward pass."""
    if entropies is None:
        raise ValueError(
            "uncertainty_kind 'shannon_entropy' needs the per-token entropies [N, T] "
            "(pass entropies=...; the trainer computes them in the forward pass)"
        )
    if tuple(entropies.shape) != tuple(logprobs.shape):
        raise ValueError(
            f"entropies has shape {tuple(entropies.shape)}, expected {tuple(logprobs.shape)}"
        )
    return entropies.to(logprobs.dtype, copy=True)  # finalised in place: never the caller's


UNCERTAINTY_KINDS = {
    "surprisal": surprisal,
    "predictive_variance": predictive_variance,
    "shannon_entropy": shannon_entropy,
}


def finalize_uncertainty(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cap at 50 and force exactly 0 on padding (in place when `values` is a fresh tensor).

    Padded logprobs may hold anything (0, −inf, NaN): NaN becomes 0 and ±inf finite
    before the mask multiplies, so padding is exactly 0 (a NaN on a real token, which
    no sampler produces, counts as 0 uncertainty rather than poisoning the batch).
    """
    weight = mask if mask.dtype == values.dtype else mask.to(values.dtype)
    return torch.nan_to_num_(values, nan=0.0).clamp_(max=UNCERTAINTY_CAP).mul_(weight)
