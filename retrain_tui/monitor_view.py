"""What the monitor shows: immutable snapshots of a campaign, built by the watcher thread
and carried to the UI thread by `messages.SnapshotReady`."""

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


class History:
    """One run's metric history as it stood when its snapshot was built, kept without a copy:
    the watcher only ever appends to these lists (a replaced metrics file gets new lists), so
    their first `len` points at build time never change. `points` copies them out; for a long
    run, call it off the UI thread."""

    __slots__ = ("_lengths", "_lists")

    def __init__(self, lists: dict[str, list[tuple[int, float]]]):
        self._lists = lists
        self._lengths = {metric: len(points) for metric, points in lists.items()}

    def points(self, metric: str) -> list[tuple[int, float]]:
        return self._lists.get(metric, [])[:self._lengths.get(metric, 0)]


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
    run_dir: Path | None = None  # where its files are (the manifest's `dir`)
    history: History | None = field(default=None, compare=False, repr=False)


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

    @property
    def finished(self) -> bool:
        """No supervisor and no run left to go: nothing to kill, restart or pause."""
        return not self.alive and not any(r.status in ("pending", "running") for r in self.runs)

    def run(self, name: str) -> RunRow | None:
        return next((r for r in self.runs if r.name == name), None)
