"""Chunked log-probabilities and entropies of sampled tokens: never an [N, T, V] tensor.

The LM head runs on a chunk of rows at a time; with gradients on, each chunk sits under
activation checkpointing, so only the gathered [n, T] values survive the forward pass and
the chunk's logits are rebuilt during backward.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


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
    chunk_tokens: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each target under softmax(logits / temperature), and optionally the entropy."""
    temperature = temperature if temperature > 0 else 1.0
    n, t = targets.shape
    rows = max(1, chunk_tokens // max(t, 1))
    weight, bias = lm_head.weight, getattr(lm_head, "bias", None)
    lps, ents = [], []
    for start in range(0, n, rows):
        args = (hidden[start : start + rows], weight, bias, targets[start : start + rows])
        if torch.is_grad_enabled() and hidden.requires_grad:
            lp, ent = checkpoint(_chunk_stats, *args, temperature, want_entropy, use_reentrant=False)
        else:
            lp, ent = _chunk_stats(*args, temperature, want_entropy)
        lps.append(lp)
        ents.append(ent)
    lp = torch.cat(lps) if lps else hidden.new_zeros((0, t))
    ent = torch.cat(ents) if (want_entropy and ents) else None
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
