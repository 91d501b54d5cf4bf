"""Held-out accuracy of a backend's current policy, and how sure a change in it is
(used by bench/learning.py and tests)."""

from __future__ import annotations

import math
import statistics

import torch

from retrain_core.tasks.data import Example, render_prompt
from retrain_core.train.checkpoint import rng_state, set_rng_state
from retrain_core.train.rewards import resolve_reward

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (then ≈ normal).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@torch.no_grad()
def heldout_correct(backend, examples: list[Example], template: str, temperature: float,
                    max_tokens: int, reward_type: str = "boxed", batch_rows: int = 128,
                    seed: int | None = None) -> list[bool]:
    """Per example: does its single completion score > 0.5 (temperature 0 = greedy)?

    Sampling uses its own seeded generator state and restores every global one afterwards
    (Python, NumPy, torch CPU and each CUDA device), so evaluating never changes the
    training run's random streams."""
    reward_fn = resolve_reward(reward_type)
    correct: list[bool] = []
    state = rng_state()
    if seed is not None:
        torch.manual_seed(seed)  # seeds the CUDA generators too
    try:
        for start in range(0, len(examples), batch_rows):
            chunk = examples[start : start + batch_rows]
            prompts = [render_prompt(backend.tokenizer, template, ex.question) for ex in chunk]
            rollouts = backend.sample(prompts, 1, temperature=temperature, max_tokens=max_tokens)
            correct += [reward_fn(text, ex.answer) > 0.5 for text, ex in zip(rollouts.texts, chunk)]
    finally:
        set_rng_state(state)
    return correct


def heldout_accuracy(*args, **kwargs) -> float:
    """Fraction of examples answered correctly (arguments of `heldout_correct`)."""
    correct = heldout_correct(*args, **kwargs)
    return sum(correct) / max(len(correct), 1)


def paired_difference(before: list[float], after: list[float]) -> tuple[float, float, float]:
    """after − before accuracy on the same problems, with its 95% interval (normal, paired).
    Each value is a problem's outcome (a bool) or its fraction correct over several samples.

    Pairing removes the between-problem variance: only problems whose outcome changed count,
    so the interval is narrower than two independent proportions' (±8 points at n = 277)."""
    if len(before) != len(after) or not before:
        raise ValueError("paired_difference needs two equally long, non-empty outcome lists")
    d = [float(a) - float(b) for b, a in zip(before, after)]
    mean = statistics.fmean(d)
    half = 1.96 * math.sqrt(statistics.pvariance(d) / (len(d) - 1)) if len(d) > 1 else math.inf
    return mean, mean - half, mean + half


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean over seeds with its 95% Student-t interval (±inf with fewer than 2 values)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, -math.inf, math.inf
    df = len(values) - 1
    half = (_T975[df - 1] if df <= len(_T975) else 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half
