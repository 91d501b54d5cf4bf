"""SEPA λ controller: linear or auto schedule behind a sticky correctness gate.

Timing, as the training loop uses it:

    lam = ctl.lambda_for_step(k)          # decided before sampling step k
    ... sample, compute_advantages(..., sepa_lambda=lam), train ...
    ctl.observe(correct_rate_k, exec_var_k)  # a gate opened here acts from step k+1

`lambda_for_step` is pure (calling it twice changes nothing); all state changes happen in
`observe`, and `state_dict()` captures all of it for checkpoints.
"""

from __future__ import annotations

import math

SCHEDULES = ("linear", "auto")
STATE_VERSION = 1
VAR_FLOOR = 1e-8


def _require_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"sepa.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _require_float(name: str, value, lo: float, hi: float, lo_open=False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bound = "(" if lo_open else "["
        raise ValueError(f"sepa.{name} must be a number in {bound}{lo}, {hi}], got {value!r}")
    return float(value)


class SepaController:
    def __init__(
        self,
        steps: int = 500,
        schedule: str = "linear",
        delay_steps: int = 50,
        correct_rate_gate: float = 0.1,
        auto_ema_decay: float = 0.9,
        auto_var_threshold: float = 0.2,
        auto_warmup_steps: int = 10,
    ):
        self.steps = _require_int("steps", steps, 0)
        if schedule not in SCHEDULES:
            raise ValueError(f"sepa.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.schedule = schedule
        self.delay_steps = _require_int("delay_steps", delay_steps, 0)
        # ≤ 0 opens the gate from the start; a correct rate never exceeds 1.
        self.correct_rate_gate = _require_float("correct_rate_gate", correct_rate_gate, -math.inf, 1.0)
        self.auto_ema_decay = _require_float("auto_ema_decay", auto_ema_decay, 0.0, 1.0)
        self.auto_var_threshold = _require_float(
            "auto_var_threshold", auto_var_threshold, 0.0, math.inf, lo_open=True
        )
        self.auto_warmup_steps = _require_int("auto_warmup_steps", auto_warmup_steps, 0)
        self.ema: float | None = None
        self.var_0: float | None = None
        self.steps_seen = 0
        self.gate_open = self.correct_rate_gate <= 0

    @classmethod
    def from_config(cls, sepa_config) -> SepaController:
        """Build from a `SepaConfig` (retrain_core.config.schema) or a dict of its fields."""
        fields = sepa_config if isinstance(sepa_config, dict) else vars(sepa_config)
        return cls(**fields)

    def linear_lambda(self, step: int) -> float:
        if self.steps == 0:
            return 0.0
        return min(max((step - self.delay_steps) / self.steps, 0.0), 1.0)

    def auto_lambda(self) -> float:
        """1 − min(ema/var_0/threshold, 1); 0 until var_0 is frozen after the warm-up."""
        if self.var_0 is None or self.ema is None:
            return 0.0
        return 1.0 - min(self.ema / self.var_0 / self.auto_var_threshold, 1.0)

    def lambda_for_step(self, step: int) -> float:
        """λ used for step `step`: 0 while the gate is closed."""
        if not self.gate_open:
            return 0.0
        lam = self.linear_lambda(step)
        if self.schedule == "auto":
            lam = max(self.auto_lambda(), lam)
        return lam

    def observe(self, correct_rate: float, exec_var: float | None = None) -> None:
        """Feed one finished step: its correct rate and its execution-token uncertainty variance.

        The gate opens for good once a step's correct rate reaches the threshold. The
        auto schedule's EMA only moves on steps that had execution tokens (exec_var set).
        """
        if not self.gate_open and correct_rate >= self.correct_rate_gate:
            self.gate_open = True
        if exec_var is None or not math.isfinite(exec_var):
            return
        v = float(exec_var)
        d = self.auto_ema_decay
        self.ema = v if self.ema is None else d * self.ema + (1.0 - d) * v
        self.steps_seen += 1
        if self.var_0 is None and self.steps_seen >= max(self.auto_warmup_steps, 1):
            self.var_0 = max(self.ema, VAR_FLOOR)

    def state_dict(self) -> dict:
        """JSON-serialisable state for trainer_state.json."""
        return {
            "version": STATE_VERSION,
            "ema": self.ema,
            "var_0": self.var_0,
            "steps_seen": self.steps_seen,
            "gate_open": self.gate_open,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("ema", "var_0", "steps_seen", "gate_open") if k not in state]
        if missing:
            raise ValueError(f"SEPA state is missing {', '.join(missing)}: {state!r}")
        self.ema = None if state["ema"] is None else float(state["ema"])
        self.var_0 = None if state["var_0"] is None else float(state["var_0"])
        self.steps_seen = int(state["steps_seen"])
        # A gate threshold ≤ 0 means open whatever the checkpoint says.
        self.gate_open = bool(state["gate_open"]) or self.correct_rate_gate <= 0

    def __repr__(self) -> str:
        return (
            f"SepaController(schedule={self.schedule!r}, steps={self.steps}, "
            f"delay_steps={self.delay_steps}, gate_open={self.gate_open}, ema={self.ema}, "
            f"var_0={self.var_0}, steps_seen={self.steps_seen})"
        )
