"""compute_advantages as the trainer uses it: skip rules, padding, stats, errors, dtypes."""

from __future__ import annotations

import math

import pytest
import torch

from retrain_core.advantages import STAT_KEYS, TRANSFORM_MODES, compute_advantages, correct_rate

MODES = [(a, tm) for a in ("grpo", "maxrl") for tm in TRANSFORM_MODES]


def batch(seed=0, groups=3, group_size=4, length=9):
    g = torch.Generator().manual_seed(seed)
    n = groups * group_size
    rewards = (torch.rand(n, generator=g) > 0.5).double()
    group_ids = torch.arange(n) // group_size
    logprobs = -torch.rand(n, length, generator=g, dtype=torch.float64) * 4
    lengths = torch.randint(1, length + 1, (n,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    planning = (torch.rand(n, length, generator=g) < 0.3) & mask
    return rewards, group_ids, logprobs, mask, planning


def test_skipped_groups_get_exact_zeros_but_others_do_not():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    group_ids = torch.tensor([7, 3, 7, 3, 7, 9, 9, 3])  # any order, unequal sizes
    lp = -torch.rand(8, 5) - 0.1
    mask = torch.ones(8, 5, dtype=torch.bool)
    for adv, tm in MODES:
        out = compute_advantages(rewards, group_ids, lp, mask, advantage_mode=adv, transform_mode=tm, sepa_lambda=0.5)
        assert out.skipped.tolist() == [True, False, True, False, True, True, True, False]
        assert torch.all(out.token_advantages[out.skipped] == 0)
        assert torch.all(out.episode_advantages[out.skipped] == 0)
        assert torch.all(out.token_advantages[~out.skipped] != 0)


def test_rewards_equal_within_tolerance_are_skipped():
    rewards = torch.tensor([0.3, 0.3 + 5e-7, 0.3, 0.3, 0.3 + 5e-6], dtype=torch.float64)
    group_ids = torch.tensor([0, 0, 1, 1, 1])
    out = compute_advantages(rewards, group_ids, torch.zeros(5, 2), torch.ones(5, 2, dtype=torch.bool), transform_mode="none")
    assert out.skipped.tolist() == [True, True, False, False, False]


def test_padding_is_exactly_zero_even_with_garbage_logprobs():
    rewards, group_ids, lp, mask, planning = batch()
    lp = lp.clone()
    lp[~mask] = float("nan")
    lp[~mask & (torch.rand(lp.shape) < 0.5)] = float("-inf")
    for adv, tm in MODES:
        out = compute_advantages(rewards, group_ids, lp, mask, planning, advantage_mode=adv, transform_mode=tm, sepa_lambda=0.7)
        assert torch.all(out.token_advantages[~mask] == 0)
        assert torch.isfinite(out.token_advantages).all()
        assert not any(math.isnan(v) for v in out.stats.values())  # no NaN leaks into the stats


def test_none_transform_gives_every_token_the_episode_advantage():
    rewards, group_ids, lp, mask, _ = batch(1)
    out = compute_advantages(rewards, group_ids, lp, mask, advantage_mode="grpo", transform_mode="none")
    expected = out.episode_advantages[:, None].expand_as(lp) * mask
    assert torch.equal(out.token_advantages, expected)


def test_hicra_without_planning_mask_equals_gtpo():
    rewards, group_ids, lp, mask, _ = batch(2)
    a = compute_advantages(rewards, group_ids, lp, mask, transform_mode="gtpo")
    b = compute_advantages(rewards, group_ids, lp, mask, transform_mode="gtpo_hicra")
    assert torch.equal(a.token_advantages, b.token_advantages)


def test_sepa_with_lambda_zero_equals_gtpo():
    rewards, group_ids, lp, mask, planning = batch(3)
    a = compute_advantages(rewards, group_ids, lp, mask, planning, transform_mode="gtpo")
    b = compute_advantages(rewards, group_ids, lp, mask, planning, transform_mode="gtpo_sepa", sepa_lambda=0.0)
    assert torch.equal(a.token_advantages, b.token_advantages)


def test_stats_keys_types_and_empty_cases():
    rewards, group_ids, lp, mask, _ = batch(4)
    out = compute_advantages(rewards, group_ids, lp, mask, transform_mode="gtpo_sepa", sepa_lambda=1.0)
    assert set(out.stats) == set(STAT_KEYS)
    assert all(type(v) is float for v in out.stats.values())
    # no planning token: no observation (NaN, null in metrics.jsonl), not a variance of 0
    assert math.isnan(out.stats["plan_surprisal_mean"]) and math.isnan(out.stats["plan_surprisal_var"])
    assert out.stats["planning_token_fraction"] == 0.0
    exec_u = (-lp)[mask]
    assert out.stats["exec_surprisal_mean"] == pytest.approx(float(exec_u.mean()))
    assert out.stats["exec_surprisal_var"] == pytest.approx(float(exec_u.var(unbiased=False)))
    # λ = 1 pools every completion to its own mean: pooled variance is the between-row one
    row_means = torch.stack([(-lp)[i][mask[i]].mean() for i in range(len(lp))])
    weights = mask.sum(1).double()
    pooled_var = float((weights * (row_means - exec_u.mean()) ** 2).sum() / weights.sum())
    assert out.stats["exec_surprisal_var_pooled"] == pytest.approx(pooled_var)
    empty = compute_advantages(rewards, group_ids, lp, torch.zeros_like(mask))
    assert empty.stats.pop("planning_token_fraction") == 0.0
    assert all(math.isnan(v) for v in empty.stats.values())
    assert torch.all(empty.token_advantages == 0)


def test_stats_include_skipped_groups():
    lp = torch.tensor([[-1.0, -3.0], [-2.0, -2.0]])
    out = compute_advantages(torch.tensor([1.0, 1.0]), torch.tensor([0, 0]), lp, torch.ones(2, 2, dtype=torch.bool))
    assert out.skipped.all()
    assert out.stats["exec_surprisal_mean"] == pytest.approx(2.0)
    assert out.stats["exec_surprisal_var"] == pytest.approx(0.5)


def test_low_precision_inputs_are_upcast():
    rewards, group_ids, lp, mask, planning = batch(5)
    ref = compute_advantages(rewards.float(), group_ids, lp.float(), mask, planning)
    half = compute_advantages(rewards.float(), group_ids, lp.bfloat16(), mask, planning)
    assert half.token_advantages.dtype == torch.float32
    assert torch.allclose(half.token_advantages, ref.token_advantages, atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"advantage_mode": "ppo"}, "advantage_mode 'ppo'"),
        ({"transform_mode": "gtpo_magic"}, "transform_mode 'gtpo_magic'"),
        ({"uncertainty_kind": "vibes"}, "uncertainty_kind 'vibes'"),
    ],
)
def test_unknown_modes_are_clear_errors(kwargs, message):
    rewards, group_ids, lp, mask, _ = batch()
    with pytest.raises(ValueError, match=message):
        compute_advantages(rewards, group_ids, lp, mask, **kwargs)


def test_shape_mismatch_is_a_clear_error():
    rewards, group_ids, lp, mask, _ = batch()
    with pytest.raises(ValueError, match="mask has shape"):
        compute_advantages(rewards, group_ids, lp, mask[:, :-1])
    with pytest.raises(ValueError, match="rewards has shape"):
        compute_advantages(rewards[:-1], group_ids, lp, mask)


def test_uncertainty_aliases():
    rewards, group_ids, lp, mask, _ = batch(6)
    a = compute_advantages(rewards, group_ids, lp, mask, uncertainty_kind="surprisal")
    b = compute_advantages(rewards, group_ids, lp, mask, uncertainty_kind="NLL")
    assert torch.equal(a.token_advantages, b.token_advantages)
    d = compute_advantages(rewards, group_ids, lp, mask, uncertainty_kind="predictive-variance")
    c = compute_advantages(rewards, group_ids, lp, mask, uncertainty_kind="pred_var")
    assert torch.equal(c.token_advantages, d.token_advantages)
    assert not torch.equal(a.token_advantages, c.token_advantages)


def test_correct_rate():
    assert correct_rate(torch.tensor([1.0, 0.5, 0.51, 0.0])) == 0.5
    assert correct_rate(torch.tensor([])) == 0.0


def test_hicra_alpha_outside_unit_interval_is_rejected():
    rewards, group_ids, lp, mask, planning = batch()
    with pytest.raises(ValueError, match="hicra.alpha"):
        compute_advantages(rewards, group_ids, lp, mask, planning, transform_mode="gtpo_hicra", hicra_alpha=1.5)


@pytest.mark.parametrize(("n", "length"), [(0, 5), (3, 0), (0, 0)])
def test_empty_batches(n, length):
    for adv, tm in MODES:
        out = compute_advantages(torch.rand(n), torch.zeros(n, dtype=torch.long), -torch.rand(n, length),
                                 torch.ones(n, length, dtype=torch.bool), advantage_mode=adv,
                                 transform_mode=tm, sepa_lambda=1.0)
        assert out.token_advantages.shape == (n, length)
        assert out.skipped.shape == (n,)
        assert all(math.isnan(v) for k, v in out.stats.items() if k != "planning_token_fraction")


def test_inputs_are_never_modified_and_outputs_never_alias_scratch():
    rewards, group_ids, lp, mask, planning = batch(7)
    ent = torch.rand_like(lp) * 80
    copies = [t.clone() for t in (rewards, lp, mask, planning, ent)]
    first = compute_advantages(rewards, group_ids, lp, mask, planning, uncertainty_kind="shannon_entropy",
                               entropies=ent, transform_mode="gtpo_sepa", sepa_lambda=0.5)
    kept = first.token_advantages.clone(), first.uncertainty.clone()
    for original, now in zip(copies, (rewards, lp, mask, planning, ent)):
        assert torch.equal(original, now)
    # a second call (same shapes, other values) must not overwrite the first call's results
    compute_advantages(rewards.flip(0), group_ids, lp * 2, mask, planning, transform_mode="gtpo_hicra")
    assert torch.equal(first.token_advantages, kept[0]) and torch.equal(first.uncertainty, kept[1])
