"""Chunked log-probabilities and entropies of sampled tokens: never an [N, T, V] tensor.

The LM head runs on a chunk of rows at a time; with gradients on, each chunk sits under
activation checkpointing, so only the gathered [n, T] values survive the forward pass and
the chunk's logits are rebuilt during backward.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

LOGITS_BUDGET_ELEMENTS = 64 * 2**20  # fp32 logits elements per chunk (256 MiB)


def _chunk_stats(hidden, head_weight, head_bias, targets, temperature: float, want_entropy: bool):
    logits = torch.nn.functional.linear(hidden, head_weight, head_bias).float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if want_entropy:
        ent = -(logp.exp() * logp).sum(-1)
    else:
        ent = torch.zeros_like(lp)
    return lp, ent


def token_logprobs(
    hidden: torch.Tensor,          # [N, T, H] hidden states that predict `targets`
    lm_head: torch.nn.Module,      # Linear H -> V
    targets: torch.Tensor,         # [N, T] token ids
    temperature: float = 1.0,
    want_entropy: bool = False,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each target under softmax(logits / temperature), and optionally the entropy.

    Tokens are processed in chunks of `chunk_tokens` (rows × positions flattened); by default
    a chunk's fp32 logits stay under ~256 MiB whatever the vocabulary."""
    temperature = temperature if temperature > 0 else 1.0
    n, t = targets.shape
    weight, bias = lm_head.weight, getattr(lm_head, "bias", None)
    if chunk_tokens is None:
        chunk_tokens = max(1, LOGITS_BUDGET_ELEMENTS // weight.shape[0])
    flat_hidden = hidden.reshape(n * t, hidden.shape[-1])
    flat_targets = targets.reshape(n * t)
    lps, ents = [], []
    for start in range(0, n * t, chunk_tokens):
        args = (flat_hidden[start : start + chunk_tokens], weight, bias, flat_targets[start : start + chunk_tokens])
        if torch.is_grad_enabled() and hidden.requires_grad:
            lp, ent = checkpoint(_chunk_stats, *args, temperature, want_entropy, use_reentrant=False)
        else:
            lp, ent = _chunk_stats(*args, temperature, want_entropy)
        lps.append(lp)
        ents.append(ent)
    lp = torch.cat(lps).reshape(n, t) if lps else hidden.new_zeros((n, t))
    ent = torch.cat(ents).reshape(n, t) if (want_entropy and ents) else None
    return lp, ent


def policy_loss(
    logprobs: torch.Tensor,        # [N, T] with grad
    old_logprobs: torch.Tensor,    # [N, T] sampling-time
    advantages: torch.Tensor,      # [N, T]
    active: torch.Tensor,          # bool [N, T]
    num_active_tokens: int,
    clip_eps: float = 0.0,
) -> torch.Tensor:
    """Token-mean policy-gradient surrogate (SPEC §4.9); PPO-clip when clip_eps > 0."""
    adv = advantages.to(logprobs.dtype)
    if clip_eps > 0:
        ratio = torch.exp(logprobs - old_logprobs.to(logprobs.dtype))
        clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
        per_token = -torch.minimum(ratio * adv, clipped * adv)
    else:
        per_token = -adv * torch.exp(logprobs - logprobs.detach())
    per_token = torch.where(active, per_token, torch.zeros_like(per_token))
    return per_token.sum() / max(num_active_tokens, 1)
