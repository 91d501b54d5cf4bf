"""Fabricated campaign directories for tests, snapshots, the README screenshots
(tools/screenshots.py) and bench/tui.py: a state.json, a manifest.json and per-run
metrics.jsonl written the way the supervisor and trainer write them (the layout of
docs/ARCHITECTURE.md), with no process behind them; and a frozen copy of the demo campaign."""

from __future__ import annotations

import json
import math
from pathlib import Path

from retrain_core.atomic import atomic_write_json

FIXED_TIME = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC: deterministic screenshots


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)


def metric_line(run: str, condition: str, seed: int, step: int, t: float = FIXED_TIME) -> dict:
    """A deterministic, plausible metrics line (reward rises with step, per condition)."""
    bias = (sum(map(ord, condition)) % 7) / 20
    wobble = 0.05 * math.sin(step * 0.7 + seed)
    reward = max(0.0, min(1.0, 0.1 + bias + step * 0.02 + wobble))
    return {
        "step": step, "run": run, "condition": condition, "seed": seed,
        "loss": round(0.5 / (1 + step * 0.1) + wobble / 10, 6),
        "mean_reward": round(reward, 6), "correct_rate": round(reward * 0.9, 6),
        "running_correct_rate": round(reward * 0.85, 6),
        "sepa_lambda": round(min(1.0, step / 20), 6), "sepa_gate_open": step > 2,
        "num_datums": 24, "skipped_groups": 1, "max_token_hit_rate": 0.0,
        "mean_completion_tokens": 12.5, "step_time_s": 1.5, "sample_time_s": 1.0,
        "train_time_s": 0.5, "throttle_wait_s": 0.1, "tokens_per_second": 400.0,
        "batch_size": 4, "group_size": 8, "lr": 0.002, "grad_norm": 0.3,
        "exec_surprisal_mean": 1.2, "exec_surprisal_var": 0.4, "plan_surprisal_mean": 0.8,
        "plan_surprisal_var": 0.2, "planning_token_fraction": 0.05, "peak_memory_mb": 300.0,
        "time": t + step * 1.5,
    }


def make_campaign(root: Path, name: str = "campaign_20260101_000000_demo",
                  conditions=("grpo+none", "maxrl+gtpo_sepa"), seeds=(42, 101),
                  max_steps: int = 30, steps: dict | None = None, statuses: dict | None = None,
                  supervisor_pid: int | None = None, supervisor_start: float | None = None,
                  campaign_toml: str | None = None) -> Path:
    """Create `root/name` with runs `{condition}_s{seed}`; `steps[run]` lines of metrics each
    (default 0) and `statuses[run]` (default pending)."""
    directory = Path(root) / name
    runs_dir = directory / "runs"
    runs = [(f"{c}_s{s}", c, s) for c in conditions for s in seeds]
    steps = steps or {}
    statuses = statuses or {}
    for run, condition, seed in runs:
        run_dir = runs_dir / run
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "metrics.jsonl", "w") as fh:
            fh.writelines(json.dumps(metric_line(run, condition, seed, step)) + "\n" for step in range(steps.get(run, 0)))
    write_json(directory / "manifest.json", {
        "campaign": name, "timestamp": FIXED_TIME, "source": "configs/demo.toml",
        "conditions": [{"label": c} for c in conditions], "seeds": list(seeds),
        "max_steps": max_steps, "parallel": True, "max_workers": 2,
        "runs": [{"name": r, "condition": c, "overrides": {}, "seed": s, "dir": f"runs/{r}",
                  "max_steps": max_steps} for r, c, s in runs]})
    write_state(directory, {r: statuses.get(r, "pending") for r, _, _ in runs},
                supervisor_pid, supervisor_start)
    if campaign_toml is not None:
        (directory / "campaign.toml").write_text(campaign_toml)
    return directory


def write_state(directory: Path, statuses: dict, pid: int | None = None,
                start: float | None = None, paused: bool = False, pause_reason: str = "",
                squeeze: dict | None = None) -> None:
    runs = {}
    for i, (run, status) in enumerate(statuses.items()):
        ended = status in ("succeeded", "failed", "killed")
        runs[run] = {"status": status, "pid": None, "pgid": None, "proc_start_time": None,
                     "attempt": 0 if status == "pending" else 1,
                     "exit_code": {"succeeded": 0, "failed": 1}.get(status),
                     "signal": 15 if status == "killed" else None,
                     "launched_at": None if status == "pending" else FIXED_TIME + i,
                     "ended_at": FIXED_TIME + 60 if ended else None,
                     "error": "exit code 1" if status == "failed" else ""}
    write_json(Path(directory) / "state.json", {
        "campaign": Path(directory).name, "updated_at": FIXED_TIME,
        "supervisor": {"pid": pid or 0, "start_time": start or FIXED_TIME,
                       "heartbeat": FIXED_TIME, "paused": paused, "pause_reason": pause_reason,
                       "stopping": False},
        "runs": runs, "squeeze": squeeze or {"status": "none", "error": "", "run": ""}})


def append_metrics(directory: Path, run: str, condition: str, seed: int, first: int,
                   count: int) -> None:
    with open(Path(directory) / "runs" / run / "metrics.jsonl", "a") as fh:
        fh.writelines(json.dumps(metric_line(run, condition, seed, step)) + "\n" for step in range(first, first + count))


def mark_supervisor_alive(directory: Path) -> None:
    """Record this very process as the campaign's supervisor, so `supervisor_alive` is true
    (pid and process start time match) without a supervisor running."""
    import psutil

    me = psutil.Process()
    write_json(Path(directory) / "supervisor.pid", {"pid": me.pid,
                                                   "start_time": me.create_time()})


SQUEEZE_ANALYSIS = {
    "adapter": "runs/grpo+none_s42/checkpoints/final", "source_rank": 8,
    "recommended_rank": 4, "threshold": 0.95, "num_layers": 2,
    "rows": [
        {"rank": 1, "mean": 0.61, "min": 0.52, "max": 0.70,
         "worst_module": "model.layers.1.self_attn.v_proj", "recommended": False},
        {"rank": 2, "mean": 0.83, "min": 0.77, "max": 0.88,
         "worst_module": "model.layers.1.self_attn.v_proj", "recommended": False},
        {"rank": 4, "mean": 0.962, "min": 0.951, "max": 0.975,
         "worst_module": "model.layers.0.mlp.down_proj", "recommended": True},
        {"rank": 8, "mean": 1.0, "min": 1.0, "max": 1.0,
         "worst_module": "model.layers.0.mlp.down_proj", "recommended": False},
    ]}


# A frozen copy of configs/demo.toml, so that changes to the demo do not move the snapshots.
DEMO_TOML = """# CPU demo campaign: the built-in tiny model learns 2-digit arithmetic.
# 5 conditions x 2 seeds, short runs, two at a time, one throttle slot (2-core friendly).

[campaign]
seeds = [42, 101]
max_steps = 30
parallel = true
max_workers = 2
stagger_seconds = 2.0
max_retries = 0
conditions = [
  { advantage_mode = "grpo", transform_mode = "none" },
  { advantage_mode = "maxrl", transform_mode = "none" },
  { advantage_mode = "maxrl", transform_mode = "gtpo" },
  { advantage_mode = "maxrl", transform_mode = "gtpo_hicra" },
  { advantage_mode = "maxrl", transform_mode = "gtpo_sepa" },
]

[backend]
devices = "cpu"
max_concurrent = 1

[model]
model = "builtin:tiny-arith"
lora_rank = 8

[training]
batch_size = 4
group_size = 8
max_tokens = 40
temperature = 1.0
top_p = 1.0
lr = 1e-3
save_every = 10

[data]
source = "arithmetic"

[sepa]
steps = 20
delay_steps = 2
correct_rate_gate = 0.1

[squeeze]
min_variance_retention = 0.95

[logging]
log_dir = "logs/train"
"""


def demo_workdir(work: Path, demo_toml: str = DEMO_TOML, **campaign) -> Path:
    """A working directory as a user has it mid-campaign: `configs/demo.toml` (`demo_toml`)
    and, under `logs/`, one live campaign (`make_campaign(**campaign)`, this process as its
    supervisor) with a squeeze analysis. Returns the campaign directory."""
    (Path(work) / "configs").mkdir(parents=True, exist_ok=True)
    (Path(work) / "configs" / "demo.toml").write_text(demo_toml)
    directory = make_campaign(Path(work) / "logs", **campaign)
    mark_supervisor_alive(directory)
    write_json(directory / "squeeze" / "analysis.json", SQUEEZE_ANALYSIS)
    return directory
