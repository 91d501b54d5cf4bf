"""Chunked log-probabilities and entropies of sampled tokens: never an [N, T, V] tensor.

The LM head runs on a chunk of rows at a time; with gradients on, each chunk sits under
activation checkpointing, so only the gathered [n, T] values survive the forward pass and
the chunk's logits are rebuilt during backward.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

LOGITS_BUDGET_ELEMENTS = 64 * 2**20  # fp32 logits elements per chunk (256 MiB)


def _chunk_stats(hidden, lm_head, targets, temperature: float, want_entropy: bool):
    # The head module itself, not its raw weight: a LoRA on lm_head (a peft wrapper whose
    # `.weight` is the frozen base weight) must act in training as it does in sampling.
    logits = lm_head(hidden).float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if want_entropy:
        ent = -(logp.exp() * logp).sum(-1)
    else:
        ent = torch.zeros_like(lp)
    return lp, ent


def token_logprobs(
    hidden: torch.Tensor,          # [N, T, H] hidden states that predict `targets`
    lm_head: torch.nn.Module,      # H -> V: a Linear, or a peft LoRA layer wrapping one
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
    if chunk_tokens is None:
        vocab = getattr(lm_head, "out_features", None) or lm_head.weight.shape[0]
        chunk_tokens = max(1, LOGITS_BUDGET_ELEMENTS // vocab)
    flat_hidden = hidden.reshape(n * t, hidden.shape[-1])
    flat_targets = targets.reshape(n * t)
    lps, ents = [], []
    for start in range(0, n * t, chunk_tokens):
        args = (flat_hidden[start : start + chunk_tokens], lm_head, flat_targets[start : start + chunk_tokens])
        if torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in lm_head.parameters())):
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
    old_logprobs: torch.Tensor,    # [N, T] the policy that the ratio is taken against (detached)
    advantages: torch.Tensor,      # [N, T]
    active: torch.Tensor,          # bool [N, T]
    num_active_tokens: int,
    clip_eps: float = 0.0,
) -> torch.Tensor:
    """Token-mean policy-gradient surrogate, PPO-clipped when clip_eps > 0.

    What the loss is, and is not (compare nanochat's scripts/chat_rl.py):

        ratio_t = exp(logp_t - old_logp_t)
        loss    = -sum_t min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t) / num_active_tokens

    - Token-mean normalisation: every active token of the step weighs the same, whatever its
      completion's length (DAPO-style), so the sum runs over the whole batch and is divided
      once by the step's active token count (micro-batches add up to exactly that).
    - No KL term and no reference model: nothing pulls the policy back toward the base
      model other than the small learning rate and the LoRA parameterisation.
    - No value function: A_t comes from the group baseline (GRPO/MaxRL) reshaped by
      GTPO/HICRA/SEPA, computed once per step from the sampled batch.
    - On-policy by default: with `ppo_epochs = 1` the trainer passes old = logp.detach(), so
      the ratio is exactly 1, clip_eps never acts, and the gradient is plain REINFORCE with
      per-token advantages. Only later epochs over the same batch (ppo_epochs > 1) move the
      ratio away from 1; then clip_eps > 0 clips it, and clip_eps = 0 leaves it unclipped.
    - The ratio is taken against the training pass's own log-probs of the first epoch, not
      the sampler's (they agree to ~1e-4 nats in float32, less in bf16), so sampler
      numerics never masquerade as policy change.

    The clipped branch is chosen with a strict comparison, never `torch.minimum`: at a tie
    (every token of the first epoch) `minimum` would send half the gradient to each input."""
    adv = advantages.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs.to(logprobs.dtype))
    per_token = ratio * adv
    if clip_eps > 0:
        clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
        per_token = torch.where(clipped < per_token, clipped, per_token)
    per_token = torch.where(active, -per_token, torch.zeros_like(per_token))
    return per_token.sum() / max(num_active_tokens, 1)


def ratio_stats(logprobs: torch.Tensor, old_logprobs: torch.Tensor, active: torch.Tensor,
                clip_eps: float) -> tuple[float, float, int, int]:
    """(sum of ratios, max ratio, tokens with |ratio - 1| > clip_eps, tokens) over `active`."""
    ratio = torch.exp(logprobs.detach().float() - old_logprobs.float())[active]
    if ratio.numel() == 0:
        return 0.0, 1.0, 0, 0
    outside = int((ratio - 1).abs().gt(clip_eps).sum()) if clip_eps > 0 else 0
    return float(ratio.sum()), float(ratio.max()), outside, int(ratio.numel())
