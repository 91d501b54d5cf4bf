"""Held-out accuracy of a backend's current policy (used by bench/learning.py and tests)."""

from __future__ import annotations

import torch

from retrain_core.train.checkpoint import rng_state, set_rng_state
from retrain_core.train.data import Example, render_prompt
from retrain_core.train.rewards import resolve_reward


@torch.no_grad()
def heldout_accuracy(backend, examples: list[Example], template: str, temperature: float,
                     max_tokens: int, reward_type: str = "boxed", batch_rows: int = 128,
                     seed: int | None = None) -> float:
    """Fraction of examples whose single completion scores > 0.5 (temperature 0 = greedy).

    Sampling uses its own seeded generator state and restores the global one afterwards,
    so evaluating never changes the training run's random stream."""
    reward_fn = resolve_reward(reward_type)
    correct = 0
    state = rng_state()  # every stream: Python, NumPy, torch CPU and each CUDA device
    if seed is not None:
        torch.manual_seed(seed)  # seeds the CUDA generators too
    try:
        for start in range(0, len(examples), batch_rows):
            chunk = examples[start : start + batch_rows]
            prompts = [render_prompt(backend.tokenizer, template, ex.question) for ex in chunk]
            rollouts = backend.sample(prompts, 1, temperature=temperature, max_tokens=max_tokens)
            correct += sum(reward_fn(text, ex.answer) > 0.5 for text, ex in zip(rollouts.texts, chunk))
    finally:
        set_rng_state(state)
    return correct / max(len(examples), 1)
