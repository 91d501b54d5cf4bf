"""Batched sampling that stops spending compute on a row once it has ended.

`generate` keeps every row in the batch until the longest one ends: a row that emitted EOS
after 10 tokens still goes through the model (and keeps its KV cache) for the other 86 steps,
only to be padded. RL groups mix short answers with long wandering ones, so that is a large
share of the work; on a GPU it is also memory held for nothing. `sample_rows` runs the same
sampling and, each time rows end, selects the rows still running out of the KV cache, the
attention mask and the positions (`DynamicCache.batch_select_indices`). A row's tokens,
log-probs and entropies are written to its own place in `[N, T]` outputs as they come.

What it does, and what it leaves out on purpose:
- temperature sampling with nucleus `top_p`, or greedy at temperature 0; no top_k, no
  repetition penalty, no model `generation_config` processors (RL samples exactly the policy
  it trains, from [training] temperature/top_p, and nothing else);
- the recorded log-prob and entropy of a token are those of the temperature-scaled full
  distribution, before the `top_p` cut (what the trainer recomputes; at temperature 0, of the
  unscaled distribution);
- a KV cache of the prompts is passed in (`prefill`) or computed here; positions follow the
  left padding as `generate` computes them (count of real tokens before a column).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _cache_kwarg() -> str:
    """The name of the KV-cache argument: `cache` (transformers ≥ 5.2x), else the older
    `past_key_values`, which newer versions still accept but deprecate with a warning in
    every run's stderr.log (and drop in 6.0)."""
    from transformers.modeling_outputs import BaseModelOutputWithPast

    return "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


CACHE_KWARG = _cache_kwarg()


def cache_of(output) -> object:
    """The KV cache of a model output, read under its current name (no deprecation warning)."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def prompt_cache(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """KV cache of every left-padded prompt row but its last token (which the sampling loop
    feeds first), positions counted over real tokens only."""
    head_mask = prompt_mask[:, :-1].long()
    out = model(input_ids=prompt_ids[:, :-1], attention_mask=head_mask,
                position_ids=(head_mask.cumsum(dim=1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)
    return cache_of(out)


@dataclass
class Sampled:
    completion_ids: torch.Tensor   # [N, T] T = steps taken; pad after a row's EOS
    logprobs: torch.Tensor         # [N, T] float32; 0 after a row's EOS
    entropies: torch.Tensor | None  # [N, T] when asked
    steps: int                     # decode steps run (the longest row's length)


def pick_next(logits: torch.Tensor, temperature: float, top_p: float, want_entropy: bool):
    """(token [n], log p [n], entropy [n] | None) from last-position logits [n, V]."""
    logits = logits.float()
    logp = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1) if want_entropy else None
    if temperature <= 0:
        token = logits.argmax(dim=-1)
    else:
        probs = logp.exp()
        if top_p < 1.0:
            # Nucleus: keep the most likely tokens until their mass reaches top_p (the top one
            # always), renormalised by multinomial itself.
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
            sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        token = torch.multinomial(probs, num_samples=1).squeeze(-1)
    return token, logp.gather(-1, token.unsqueeze(-1)).squeeze(-1), entropy


@torch.no_grad()
def sample_rows(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
                eos_ids: list[int], pad_id: int, temperature: float, top_p: float,
                want_entropy: bool, prefill=None) -> Sampled:
    """Sample up to `max_new_tokens` after each left-padded prompt row.

    `prefill`, when given, is the KV cache of `prompt_ids[:, :-1]` for every row (e.g. one
    pass per group, repeated); else it is computed here. Either way the loop starts by
    feeding each row's last prompt token."""
    n, device = prompt_ids.shape[0], prompt_ids.device
    completion = torch.full((n, max_new_tokens), pad_id, dtype=prompt_ids.dtype, device=device)
    logprobs = torch.zeros((n, max_new_tokens), dtype=torch.float32, device=device)
    entropies = torch.zeros_like(logprobs) if want_entropy else None
    eos = torch.tensor(eos_ids, device=device)
    attention = prompt_mask.long()
    positions = (attention.sum(dim=1) - 1).clamp(min=0)  # of each row's last prompt token
    cache = prefill
    if cache is None and prompt_ids.shape[1] > 1:
        cache = prompt_cache(model, prompt_ids, prompt_mask)
    last = prompt_ids[:, -1:]
    running = torch.arange(n, device=device)  # original row of each row still in the batch
    steps = 0
    for step in range(max_new_tokens):
        kwargs = {CACHE_KWARG: cache} if cache is not None else {}
        out = model(input_ids=last, attention_mask=attention, position_ids=positions.unsqueeze(1),
                    use_cache=True, **kwargs)
        cache = cache_of(out)
        token, token_logp, entropy = pick_next(out["logits"][:, -1], temperature, top_p, want_entropy)
        completion[running, step] = token
        logprobs[running, step] = token_logp
        if entropies is not None:
            entropies[running, step] = entropy
        steps = step + 1
        ended = torch.isin(token, eos)
        attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=1)
        positions, last = positions + 1, token.unsqueeze(1)
        if bool(ended.any()):
            keep = (~ended).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            cache.batch_select_indices(keep)
            running, attention, positions, last = running[keep], attention[keep], positions[keep], last[keep]
    return Sampled(completion[:, :steps], logprobs[:, :steps],
                   entropies[:, :steps] if entropies is not None else None, steps)
