"""SepaController: linear schedule, sticky gate timing, auto schedule, state."""

from __future__ import annotations

import json

import pytest

from retrain_core.config.schema import SepaConfig
from retrain_core.sepa import SepaController


def test_linear_schedule_values():
    ctl = SepaController(steps=100, delay_steps=50, correct_rate_gate=0.0)
    assert [ctl.lambda_for_step(s) for s in (0, 50, 75, 150, 400)] == [0.0, 0.0, 0.25, 1.0, 1.0]


def test_linear_with_zero_steps_is_zero():
    ctl = SepaController(steps=0, delay_steps=0, correct_rate_gate=0.0)
    assert ctl.lambda_for_step(1000) == 0.0


def test_gate_opened_by_step_k_acts_from_step_k_plus_one_and_stays_open():
    ctl = SepaController(steps=10, delay_steps=0, correct_rate_gate=0.5)
    lambdas = []
    for step, rate in enumerate([0.1, 0.4, 0.5, 0.0, 0.0]):
        lambdas.append(ctl.lambda_for_step(step))  # decided before sampling step `step`
        ctl.observe(rate, None)
    # the gate opens during step 2 (rate 0.5 ≥ 0.5): step 2 still ran with λ = 0
    assert lambdas == [0.0, 0.0, 0.0, 0.3, 0.4]
    assert ctl.gate_open  # sticky: later low rates do not close it


def test_gate_threshold_at_or_below_zero_is_open_from_the_start():
    for gate in (0.0, -1.0):
        ctl = SepaController(steps=10, delay_steps=0, correct_rate_gate=gate)
        assert ctl.gate_open and ctl.lambda_for_step(5) == 0.5


def test_lambda_for_step_is_pure():
    ctl = SepaController(steps=10, delay_steps=0, correct_rate_gate=0.0)
    assert ctl.lambda_for_step(3) == ctl.lambda_for_step(3) == 0.3
    assert ctl.state_dict()["steps_seen"] == 0


def test_auto_schedule_ema_warmup_and_lambda():
    ctl = SepaController(
        steps=1000, delay_steps=1000, schedule="auto", correct_rate_gate=0.0,
        auto_ema_decay=0.5, auto_var_threshold=0.5, auto_warmup_steps=2,
    )
    ctl.observe(1.0, 4.0)
    assert ctl.ema == 4.0 and ctl.var_0 is None and ctl.lambda_for_step(0) == 0.0
    ctl.observe(1.0, 2.0)  # ema = 0.5·4 + 0.5·2 = 3; warm-up over: var_0 frozen at 3
    assert ctl.ema == 3.0 and ctl.var_0 == 3.0
    assert ctl.lambda_for_step(1) == 0.0  # 1 − min(3/3/0.5, 1)
    ctl.observe(1.0, 0.0)  # ema 1.5 → ratio 1.5/3/0.5 = 1
    assert ctl.lambda_for_step(2) == 0.0
    ctl.observe(1.0, 0.0)  # ema 0.75 → ratio 0.5 → λ 0.5
    assert ctl.var_0 == 3.0  # frozen
    assert ctl.lambda_for_step(3) == pytest.approx(0.5)
    ctl.observe(1.0, None)  # a step without execution tokens leaves the EMA alone
    assert ctl.ema == 0.75 and ctl.steps_seen == 4


def test_auto_takes_the_max_with_linear_and_respects_the_gate():
    ctl = SepaController(
        steps=10, delay_steps=0, schedule="auto", correct_rate_gate=0.9,
        auto_ema_decay=0.0, auto_var_threshold=1.0, auto_warmup_steps=1,
    )
    ctl.observe(0.1, 1.0)  # var_0 = 1
    ctl.observe(0.1, 0.2)  # ema 0.2 → λ_auto 0.8, but the gate is closed
    assert ctl.lambda_for_step(2) == 0.0
    ctl.observe(0.95, 0.2)
    assert ctl.lambda_for_step(3) == pytest.approx(0.8)  # max(0.8, 0.3)
    assert ctl.lambda_for_step(9) == pytest.approx(0.9)  # linear wins


def test_var_0_has_a_floor():
    ctl = SepaController(schedule="auto", correct_rate_gate=0.0, auto_warmup_steps=1, delay_steps=10**6)
    ctl.observe(1.0, 0.0)
    assert ctl.var_0 == 1e-8
    assert ctl.lambda_for_step(0) == 1.0


def test_state_round_trip_through_json_continues_identically():
    kwargs = {"steps": 20, "delay_steps": 3, "schedule": "auto", "correct_rate_gate": 0.3,
                  "auto_ema_decay": 0.8, "auto_warmup_steps": 3}
    a = SepaController(**kwargs)
    for step, (rate, var) in enumerate([(0.1, 2.0), (0.4, 1.5), (0.2, 1.0), (0.5, 0.3)]):
        a.lambda_for_step(step)
        a.observe(rate, var)
    b = SepaController(**kwargs)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    for step in range(4, 12):
        assert a.lambda_for_step(step) == b.lambda_for_step(step)
        a.observe(0.0, 0.1 * step)
        b.observe(0.0, 0.1 * step)
    assert b.state_dict() == a.state_dict()
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({"ema": 1.0})


def test_from_config_uses_every_sepa_field():
    cfg = SepaConfig(steps=7, schedule="auto", delay_steps=2, correct_rate_gate=0.0)
    ctl = SepaController.from_config(cfg)
    assert (ctl.steps, ctl.schedule, ctl.delay_steps, ctl.gate_open) == (7, "auto", 2, True)


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("steps", -1), ("steps", 2.5), ("steps", True), ("schedule", "cosine"),
        ("delay_steps", -3), ("correct_rate_gate", 1.5), ("correct_rate_gate", float("nan")),
        ("auto_ema_decay", 1.2), ("auto_ema_decay", -0.1), ("auto_var_threshold", 0.0),
        ("auto_var_threshold", "0.2"), ("auto_warmup_steps", -1),
    ],
)
def test_invalid_knobs_raise_value_error_naming_the_knob(knob, value):
    with pytest.raises(ValueError, match=knob):
        SepaController(**{knob: value})


def test_a_step_without_execution_tokens_is_no_observation_for_auto():
    """All-planning (or all-empty) steps report exec variance NaN, so λ does not jump."""
    import math

    import torch

    from retrain_core.advantages import compute_advantages

    def step_stats(all_planning: bool, empty: bool = False) -> float:
        g = torch.Generator().manual_seed(0)
        lp = -torch.rand(4, 6, generator=g, dtype=torch.float64) * 3
        mask = torch.zeros(4, 6, dtype=torch.bool) if empty else torch.ones(4, 6, dtype=torch.bool)
        planning = mask.clone() if all_planning else torch.zeros_like(mask)
        out = compute_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 1, 1]), lp, mask,
                                 planning, transform_mode="gtpo_sepa")
        return out.stats["exec_surprisal_var"]

    assert math.isnan(step_stats(all_planning=True)) and math.isnan(step_stats(False, empty=True))
    ctl = SepaController(steps=1000, delay_steps=1000, schedule="auto", correct_rate_gate=0.0,
                         auto_ema_decay=0.5, auto_var_threshold=0.5, auto_warmup_steps=1)
    ctl.observe(0.5, step_stats(all_planning=False))
    before = (ctl.lambda_for_step(1), ctl.ema, ctl.steps_seen)
    ctl.observe(0.5, step_stats(all_planning=True))
    ctl.observe(0.5, step_stats(False, empty=True))
    assert (ctl.lambda_for_step(3), ctl.ema, ctl.steps_seen) == before
