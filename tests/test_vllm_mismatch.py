"""Truncated importance sampling weights and the sampler/trainer mismatch metrics."""

from __future__ import annotations

import math

import pytest
import torch

from retrain_core.config.schema import Config
from retrain_core.train.mismatch import METRIC_KEYS, MismatchStats


def test_weights_are_the_ratio_capped_and_one_off_the_active_tokens():
    train = torch.tensor([[0.0, -1.0, -2.0, -0.5]])
    sampler = train - torch.tensor([[math.log(3.0), 0.0, -math.log(2.0), 5.0]])  # ratios 3, 1, 0.5, e^5
    active = torch.tensor([[True, True, True, False]])
    stats = MismatchStats()
    w = stats.weights(train, sampler, active, cap=2.0)
    assert torch.allclose(w, torch.tensor([[2.0, 1.0, 0.5, 1.0]]))
    m = stats.metrics()
    assert m["mismatch_logp_abs_mean"] == pytest.approx((math.log(3) + 0 + math.log(2)) / 3)
    assert m["mismatch_ratio_mean"] == pytest.approx((3 + 1 + 0.5) / 3, rel=1e-6)
    assert m["mismatch_ratio_max"] == pytest.approx(3.0, rel=1e-6)  # the inactive e^5 is not counted
    assert m["tis_truncated_fraction"] == pytest.approx(1 / 3)


def test_cap_zero_turns_weighting_off_but_still_measures():
    stats = MismatchStats()
    w = stats.weights(torch.zeros(1, 2), torch.full((1, 2), -1.0), torch.ones(1, 2, dtype=torch.bool), cap=0)
    assert torch.equal(w, torch.ones(1, 2))
    assert stats.metrics()["mismatch_logp_abs_mean"] == pytest.approx(1.0)
    assert stats.metrics()["tis_truncated_fraction"] == 0.0


def test_chunks_accumulate_and_no_tokens_is_no_observation():
    assert MismatchStats().metrics() == dict.fromkeys(METRIC_KEYS)
    stats = MismatchStats()
    on = torch.ones(1, 1, dtype=torch.bool)
    stats.weights(torch.zeros(1, 1), torch.full((1, 1), -0.2), on, 2.0)
    stats.weights(torch.zeros(1, 1), torch.full((1, 1), 0.4), on, 2.0)
    assert stats.metrics()["mismatch_logp_abs_mean"] == pytest.approx(0.3)


@pytest.mark.slow
def test_hf_engine_train_step_reports_a_tiny_mismatch(tiny_model_dir):
    from retrain_core.train.backend import LocalBackend

    cfg = Config()
    cfg.model.model, cfg.model.lora_rank, cfg.backend.devices = str(tiny_model_dir), 4, "cpu"
    cfg.training.max_tokens, cfg.training.temperature, cfg.training.top_p = 12, 1.0, 1.0
    backend = LocalBackend(cfg)
    torch.manual_seed(0)
    rollouts = backend.sample(["12+7=", "3+4="], 4)
    advantages = torch.where(rollouts.mask, torch.linspace(-1, 1, 8).unsqueeze(1), torch.zeros(()))
    out = backend.train_step(rollouts, advantages)
    assert set(METRIC_KEYS) <= set(out)
    assert 0 <= out["mismatch_logp_abs_mean"] < 1e-3  # the same model, the same float32 kernels
    assert out["tis_truncated_fraction"] == 0.0
