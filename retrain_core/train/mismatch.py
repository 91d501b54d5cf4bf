"""Sampler/trainer mismatch: truncated importance sampling (TIS) weights and their metrics.

The sampler's log-probs (the trainer's own transformers sampling loop, or a vLLM server with its own
kernels and dtype) are not exactly the training pass's. The policy gradient is an
expectation under the training policy π but the tokens were drawn from the sampler μ, so
each token's advantage is weighted by

    w_t = min(π(y_t) / μ(y_t), tis_cap)        (detached; tis_cap = 0: w_t = 1)

(truncated importance sampling, Ionides 2008; as in the "your efficient RL framework
secretly brings you off-policy RL" fix used by verl and TRL for vLLM rollouts). Every
metrics line records how far the two disagree on the tokens trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

METRIC_KEYS = ("mismatch_logp_abs_mean", "mismatch_ratio_mean", "mismatch_ratio_max",
               "tis_truncated_fraction")


@dataclass
class MismatchStats:
    abs_sum: float = 0.0
    ratio_sum: float = 0.0
    ratio_max: float = 0.0
    truncated: int = 0
    tokens: int = 0

    def weights(self, train_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor,
                active: torch.Tensor, cap: float) -> torch.Tensor:
        """TIS weights [N, T] for one chunk (1 off `active`), and the chunk counted."""
        delta = train_logprobs.detach().float() - sampler_logprobs.float()
        ratio = torch.exp(delta)
        picked = ratio[active]
        if picked.numel():
            self.abs_sum += float(delta[active].abs().sum())
            self.ratio_sum += float(picked.sum())
            self.ratio_max = max(self.ratio_max, float(picked.max()))
            self.truncated += int((picked > cap).sum()) if cap > 0 else 0
            self.tokens += int(picked.numel())
        if cap <= 0:
            return torch.ones_like(ratio)
        return torch.where(active, ratio.clamp(max=cap), torch.ones_like(ratio))

    def metrics(self) -> dict:
        """The four metric values; None (no observation) when no token was trained on."""
        if not self.tokens:
            return dict.fromkeys(METRIC_KEYS)
        return {"mismatch_logp_abs_mean": self.abs_sum / self.tokens,
                "mismatch_ratio_mean": self.ratio_sum / self.tokens,
                "mismatch_ratio_max": self.ratio_max,
                "tis_truncated_fraction": self.truncated / self.tokens}
