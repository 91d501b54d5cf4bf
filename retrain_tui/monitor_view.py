"""What the monitor shows: immutable snapshots of a campaign, built by the watcher thread
and applied by the UI thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TABLE_METRICS = ("mean_reward", "correct_rate", "loss", "sepa_lambda", "step_time_s",
                 "throttle_wait_s")
PLOT_METRICS = ("mean_reward", "correct_rate", "running_correct_rate", "loss", "sepa_lambda",
                "step_time_s", "throttle_wait_s", "tokens_per_second", "grad_norm",
                "exec_surprisal_mean", "planning_token_fraction", "mean_completion_tokens",
                "mismatch_logp_abs_mean")  # sampler vs training pass (vLLM engine: #14)
KEPT_METRICS = tuple(dict.fromkeys(TABLE_METRICS + PLOT_METRICS))
FINISHED = ("succeeded", "failed", "killed")


@dataclass(frozen=True)
class RunRow:
    name: str
    condition: str
    seed: object
    status: str
    step: int
    max_steps: int
    attempt: int
    metrics: dict
    eta_s: float
    error: str = ""
    exit_code: object = None
    stalled: dict | None = None  # the supervisor's flag: {since, idle_s, bound_s}
    gpus: tuple = ()  # the run's share of the GPU pool (state.json), () without placement


@dataclass(frozen=True)
class ConditionRow:
    label: str
    seeds: int
    correct: tuple[float, float]
    reward: tuple[float, float]
    steps_done: int
    steps_total: int
    statuses: dict


@dataclass(frozen=True)
class Snapshot:
    version: int
    directory: Path
    campaign: str
    alive: bool
    supervisor: dict
    start_time: float | None
    runs: list[RunRow]
    conditions: list[ConditionRow]
    plot_metric: str
    plot_series: dict  # condition -> (steps, mean values)
    eta_s: float
    squeeze: dict
    squeeze_analysis: dict | None
    new_failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    made_at: float = 0.0  # time.monotonic() when built (for update-latency measurements)

    @property
    def paused(self) -> bool:
        return bool(self.supervisor.get("paused"))

    def run(self, name: str) -> RunRow | None:
        return next((r for r in self.runs if r.name == name), None)
