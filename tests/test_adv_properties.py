"""Hypothesis properties of the advantage pipeline (issue #3 "Must show")."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain_core.advantages import (
    TRANSFORM_MODES,
    apply_hicra,
    compute_advantages,
    gtpo_token_advantages,
    sepa_pool,
)

SETTINGS = settings(max_examples=60, deadline=None)
MODES = [(a, tm) for a in ("grpo", "maxrl") for tm in TRANSFORM_MODES]


@st.composite
def batches(draw, max_groups=4, max_size=5, max_len=8):
    sizes = draw(st.lists(st.integers(1, max_size), min_size=1, max_size=max_groups))
    n = sum(sizes)
    length = draw(st.integers(1, max_len))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    group_ids = torch.repeat_interleave(torch.arange(len(sizes)) * 7 + 3, torch.tensor(sizes))
    group_ids = group_ids[torch.randperm(n, generator=g)]  # groups interleaved, any order
    rewards = torch.tensor(draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=n, max_size=n)),
                           dtype=torch.float64)
    logprobs = -torch.rand(n, length, generator=g, dtype=torch.float64) * draw(st.sampled_from([0.01, 1.0, 10.0, 80.0]))
    lengths = torch.randint(0, length + 1, (n,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    planning = (torch.rand(n, length, generator=g) < draw(st.sampled_from([0.0, 0.2, 0.7, 1.0]))) & mask
    lam = draw(st.sampled_from([0.0, 0.3, 1.0]))
    return rewards, group_ids, logprobs, mask, planning, lam


def uncertainties(lp, mask):
    return torch.where(mask, (-lp).clamp(max=50), torch.zeros_like(lp))


@SETTINGS
@given(batches(), st.floats(-5, 5))
def test_gtpo_beta_zero_is_identity_and_never_flips_sign(batch, adv_scale):
    rewards, _, lp, mask, _, _ = batch
    adv = (rewards - 0.4) * adv_scale
    u = uncertainties(lp, mask)
    same = gtpo_token_advantages(adv, u, mask, 0.0)
    assert torch.equal(same, torch.where(mask, adv[:, None].expand_as(u), torch.zeros_like(u)))
    for beta in (0.1, 0.5, 3.0):
        out = gtpo_token_advantages(adv, u, mask, beta)
        assert torch.all(out * adv[:, None] >= 0)
        assert torch.all(out[~mask] == 0)


@SETTINGS
@given(batches())
def test_sepa_preserves_exec_mean_identity_at_zero_and_flattens_at_one(batch):
    _, _, lp, mask, planning, lam = batch
    u = uncertainties(lp, mask)
    execution = mask & ~planning
    assert torch.equal(sepa_pool(u, mask, planning, 0.0), u)
    for value in (lam, 1.0):
        pooled = sepa_pool(u, mask, planning, value)
        assert torch.equal(pooled[~execution], u[~execution])  # planning + padding untouched
        for i in range(len(u)):
            if execution[i].any():
                before, after = u[i][execution[i]], pooled[i][execution[i]]
                assert torch.allclose(after.mean(), before.mean(), rtol=1e-12, atol=1e-12)
                if value == 1.0:
                    assert after.var(unbiased=False) <= 1e-20


@SETTINGS
@given(batches(), st.floats(0, 1))
def test_hicra_never_flips_sign(batch, alpha):
    rewards, _, lp, mask, planning, _ = batch
    adv = gtpo_token_advantages(rewards - 0.5, uncertainties(lp, mask), mask, 0.3)
    out = apply_hicra(adv, planning, alpha)
    assert torch.all(out * adv >= 0)
    assert torch.all(out >= adv)  # planning tokens gain credit (or lose blame)
    assert torch.equal(out[~planning], adv[~planning])


@SETTINGS
@given(batches())
def test_padding_is_always_zero(batch):
    rewards, group_ids, lp, mask, planning, lam = batch
    lp = torch.where(mask, lp, torch.full_like(lp, float("nan")))
    for adv, tm in MODES:
        out = compute_advantages(rewards, group_ids, lp, mask, planning, advantage_mode=adv,
                                 transform_mode=tm, sepa_lambda=lam)
        assert torch.all(out.token_advantages[~mask] == 0)
        assert torch.all(out.token_advantages[out.skipped] == 0)


@SETTINGS
@given(batches(), st.integers(1, 6))
def test_invariant_to_padding_length(batch, extra):
    rewards, group_ids, lp, mask, planning, lam = batch
    n, length = lp.shape
    garbage = -torch.rand(n, extra, dtype=lp.dtype) * 100
    lp2 = torch.cat([lp, garbage], 1)
    mask2 = torch.cat([mask, torch.zeros(n, extra, dtype=torch.bool)], 1)
    plan2 = torch.cat([planning, torch.ones(n, extra, dtype=torch.bool)], 1)
    for adv, tm in MODES:
        kw = {"advantage_mode": adv, "transform_mode": tm, "sepa_lambda": lam}
        a = compute_advantages(rewards, group_ids, lp, mask, planning, **kw)
        b = compute_advantages(rewards, group_ids, lp2, mask2, plan2, **kw)
        assert torch.allclose(b.token_advantages[:, :length], a.token_advantages, rtol=1e-12, atol=1e-12)
        assert torch.all(b.token_advantages[:, length:] == 0)
        assert a.stats.keys() == b.stats.keys()
        for k in a.stats:
            assert math.isclose(a.stats[k], b.stats[k], rel_tol=1e-9, abs_tol=1e-9) or (
                math.isnan(a.stats[k]) and math.isnan(b.stats[k])), k


@SETTINGS
@given(batches(), st.integers(0, 2**31 - 1))
def test_invariant_to_completion_and_group_order(batch, seed):
    rewards, group_ids, lp, mask, planning, lam = batch
    perm = torch.randperm(len(rewards), generator=torch.Generator().manual_seed(seed))
    relabel = group_ids * 3 + 1  # group ids are labels, not positions
    for adv, tm in MODES:
        kw = {"advantage_mode": adv, "transform_mode": tm, "sepa_lambda": lam}
        a = compute_advantages(rewards, group_ids, lp, mask, planning, **kw)
        b = compute_advantages(rewards[perm], relabel[perm], lp[perm], mask[perm], planning[perm], **kw)
        assert torch.allclose(b.token_advantages, a.token_advantages[perm], rtol=1e-10, atol=1e-12)
        assert torch.equal(b.skipped, a.skipped[perm])
