"""Every worked numeric example of the advantage formulas (episode advantages, uncertainty,\nGTPO, HICRA, SEPA pooling), through the public functions and the pipeline."""

from __future__ import annotations

import math

import pytest
import torch

from retrain_core.advantages import (
    apply_hicra,
    compute_advantages,
    grpo_advantages,
    gtpo_token_advantages,
    maxrl_advantages,
    sepa_pool,
)
from retrain_core.advantages.uncertainty import predictive_variance

F64 = torch.float64


def t(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


def close(actual, expected, tol=1e-9):
    expected = t(expected) if not isinstance(expected, torch.Tensor) else expected
    assert torch.allclose(actual.to(F64), expected.to(F64), rtol=tol, atol=tol), (actual, expected)


def one_group(n):
    return torch.zeros(n, dtype=torch.long)


# --- §4.1 episode advantages -------------------------------------------------------------

def test_grpo_vector():
    close(grpo_advantages(t([1, 0, 0, 0]), one_group(4)), [0.75, -0.25, -0.25, -0.25])


@pytest.mark.parametrize(
    ("rewards", "expected"),
    [
        ([1, 0, 0, 0], [2.999988000048, -0.999996000016, -0.999996000016, -0.999996000016]),
        ([1, 1, 0], [0.49999925, 0.49999925, -0.9999985]),
        ([0.5, 0.25, 0], [0.999996, 0.0, -0.999996]),
        ([1e-6, 0], [0.0, 0.0]),
    ],
)
def test_maxrl_vectors(rewards, expected):
    close(maxrl_advantages(t(rewards), one_group(len(rewards))), expected, tol=1e-9)


def test_maxrl_vectors_through_pipeline_in_one_batch():
    # The four example groups above in one batch, interleaved, of unequal sizes.
    rewards = [1, 1, 0.5, 1e-6, 0, 1, 0, 0.25, 0, 0, 0, 0, 0]
    groups = [0, 1, 2, 3, 0, 1, 0, 2, 1, 2, 3, 0, 4]
    n, length = len(rewards), 3
    out = compute_advantages(
        t(rewards), torch.tensor(groups), torch.zeros(n, length, dtype=F64),
        torch.ones(n, length, dtype=torch.bool), advantage_mode="maxrl", transform_mode="none",
    )
    a, b = 2.999988000048, -0.999996000016
    expected = [a, 0.49999925, 0.999996, 0, b, 0.49999925, b, 0, -0.9999985, -0.999996, 0, b, 0]
    close(out.episode_advantages, expected)
    # group 3 = [1e-6, 0] is equal within 1e-6 and the lone group 4 has no spread: skipped
    assert out.skipped.tolist() == [g in (3, 4) for g in groups]
    close(out.token_advantages, t(expected)[:, None].expand(n, length))


# --- §4.2 uncertainty ----------------------------------------------------------------------

def _uncertainty(kind, logprobs, entropies=None):
    lp = t([logprobs])
    out = compute_advantages(
        t([1.0]), one_group(1), lp, torch.ones_like(lp, dtype=torch.bool),
        uncertainty_kind=kind, entropies=entropies, transform_mode="none",
    )
    return out.uncertainty[0]


def test_surprisal_is_negative_logprob_capped_at_50():
    close(_uncertainty("surprisal", [-0.5, -2.0, -80.0, 0.0]), [0.5, 2.0, 50.0, 0.0])


def test_predictive_variance():
    lps = [math.log(0.5), math.log(0.9), 0.0]
    close(_uncertainty("predictive_variance", lps), [0.25, 0.09, 0.0], tol=1e-12)


def test_predictive_variance_is_exact_near_one_and_clipped_above():
    """float32 near p ≈ 1: 1 − p from −expm1(logprob), not 1 − exp (1e-3 relative error)."""
    lps64 = torch.tensor([-1e-4, -3e-6, -1e-7, -20.0], dtype=torch.float64)
    exact = torch.exp(lps64) * -torch.expm1(lps64)
    got = predictive_variance(lps64.float(), torch.ones(4, dtype=torch.bool))
    assert torch.allclose(got.double(), exact, rtol=1e-5, atol=0)
    # a logprob a hair above 0 (sampler rounding): p clipped to 1, variance 0, never negative
    above = predictive_variance(torch.tensor([1e-3, 0.0]), torch.ones(2, dtype=torch.bool))
    assert above.tolist() == [0.0, 0.0]


def test_shannon_entropy_uses_given_entropies_and_caps():
    ent = t([[0.3, 1.7, 70.0]])
    close(_uncertainty("shannon_entropy", [-1.0, -1.0, -1.0], entropies=ent), [0.3, 1.7, 50.0])
    close(_uncertainty("entropy", [-1.0, -1.0, -1.0], entropies=ent), [0.3, 1.7, 50.0])


def test_shannon_entropy_without_entropies_is_a_clear_error():
    with pytest.raises(ValueError, match="entropies"):
        _uncertainty("shannon_entropy", [-1.0])


# --- §4.3 GTPO -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("adv", "u", "beta", "expected"),
    [
        (1.0, [0.1, 0.5, 0.9], 0.1, [0.92, 1.00, 1.08]),
        (-2.0, [1, 2, 3], 0.5, [-1.5, -2.0, -2.5]),
        (1.0, [0, 0, 10], 2.0, [0.0, 0.0, 5.0]),
        (1.0, [100, 0], 0.1, [1.1, 0.9]),  # 100 is capped to 50
        (1.0, [0.0, 0.0], 0.5, [1.0, 1.0]),  # ū < 1e-7: every token gets A
        (3.0, [0.1, 5.0], 0.0, [3.0, 3.0]),  # β = 0: every token gets A
    ],
)
def test_gtpo_vectors(adv, u, beta, expected):
    u = t([u])
    out = gtpo_token_advantages(t([adv]), u, torch.ones_like(u, dtype=torch.bool), beta)
    close(out[0], expected, tol=1e-7)


def test_gtpo_cap_through_pipeline():
    # surprisal of logprob −100 is capped to 50; maxrl of [1, 0] gives A = 0.5/(0.5+1e-6)
    lp = t([[-100.0, 0.0], [-1.0, -1.0]])
    out = compute_advantages(
        t([1, 0]), one_group(2), lp, torch.ones(2, 2, dtype=torch.bool),
        advantage_mode="maxrl", transform_mode="gtpo", gtpo_beta=0.1,
    )
    a = 0.5 / (0.5 + 1e-6)
    close(out.token_advantages[0], [1.1 * a, 0.9 * a], tol=1e-7)
    close(out.token_advantages[1], [-a, -a], tol=1e-7)  # equal u: weights 1


# --- §4.4 HICRA ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("adv", "plan", "expected"),
    [([1, 1, 1], [0, 1, 0], [1, 1.2, 1]), ([-1, -1], [0, 1], [-1, -0.8])],
)
def test_hicra_vectors(adv, plan, expected):
    out = apply_hicra(t([adv]), torch.tensor([plan], dtype=torch.bool), 0.2)
    close(out[0], expected, tol=1e-12)


# --- §4.5 SEPA pooling -----------------------------------------------------------------------

def test_sepa_vector_lambda_one():
    u = t([[0.1, 0.5, 0.9]])
    out = sepa_pool(u, torch.ones_like(u, dtype=torch.bool), torch.tensor([[1, 0, 0]], dtype=torch.bool), 1.0)
    close(out[0], [0.1, 0.7, 0.7], tol=1e-12)


def test_sepa_vector_lambda_half_all_execution():
    u = t([[0.2, 0.8]])
    out = sepa_pool(u, torch.ones_like(u, dtype=torch.bool), torch.zeros_like(u, dtype=torch.bool), 0.5)
    close(out[0], [0.35, 0.65], tol=1e-12)


def test_sepa_lambda_is_clamped_and_all_planning_rows_unchanged():
    u = t([[0.2, 0.8], [0.3, 0.9]])
    mask = torch.ones_like(u, dtype=torch.bool)
    plan = torch.tensor([[0, 0], [1, 1]], dtype=torch.bool)
    close(sepa_pool(u, mask, plan, 7.0), [[0.5, 0.5], [0.3, 0.9]], tol=1e-12)
    close(sepa_pool(u, mask, plan, -3.0), u)


def test_pipeline_order_sepa_then_gtpo_then_stats():
    # one informative group of 2; completion 0 has a planning token at position 0
    lp = t([[-0.1, -0.5, -0.9], [-0.2, -0.8, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    plan = torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    out = compute_advantages(
        t([1, 0]), one_group(2), lp, mask, plan, advantage_mode="grpo",
        transform_mode="gtpo_sepa", gtpo_beta=0.1, sepa_lambda=1.0,
    )
    # pooled u: row 0 [0.1, 0.7, 0.7] (ū = 0.5), row 1 [0.5, 0.5] (ū = 0.5)
    w0 = [1 + 0.1 * (x / (0.5 + 1e-8) - 1) for x in (0.1, 0.7, 0.7)]
    close(out.token_advantages[0], [0.5 * w for w in w0], tol=1e-7)
    close(out.token_advantages[1], [-0.5, -0.5, 0.0], tol=1e-7)
    s = out.stats
    assert s["plan_surprisal_mean"] == pytest.approx(0.1)
    assert s["plan_surprisal_var"] == pytest.approx(0.0, abs=1e-12)
    assert s["exec_surprisal_mean"] == pytest.approx((0.5 + 0.9 + 0.2 + 0.8) / 4)
    exec_vals = torch.tensor([0.5, 0.9, 0.2, 0.8], dtype=F64)
    assert s["exec_surprisal_var"] == pytest.approx(float(exec_vals.var(unbiased=False)))
    assert s["exec_surprisal_mean_pooled"] == pytest.approx(0.6)  # (0.7+0.7+0.5+0.5)/4
    assert s["exec_surprisal_var_pooled"] == pytest.approx(0.01)
    assert s["planning_token_fraction"] == pytest.approx(1 / 5)
