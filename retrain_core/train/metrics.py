"""Run outputs: metrics.jsonl, emergence files, the console line and optional wandb."""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path

METRIC_FIELDS = (
    "step", "run", "condition", "seed", "loss", "mean_reward", "correct_rate",
    "running_correct_rate", "sepa_lambda", "sepa_gate_open", "num_datums", "skipped_groups",
    "max_token_hit_rate", "mean_completion_tokens", "step_time_s", "sample_time_s",
    "train_time_s", "throttle_wait_s", "tokens_per_second", "batch_size", "group_size", "lr",
    "grad_norm", "ppo_ratio_mean", "ppo_ratio_max", "ppo_clip_fraction", "exec_surprisal_mean", "exec_surprisal_var", "plan_surprisal_mean",
    "plan_surprisal_var", "planning_token_fraction", "peak_memory_mb", "time",
    "gpu_peak_allocated_mb", "gpu_peak_reserved_mb", "host_rss_mb", "host_peak_rss_mb",
)
TIMING_FIELDS = ("step_time_s", "sample_time_s", "train_time_s", "throttle_wait_s",
                 "tokens_per_second", "peak_memory_mb", "time",
                 "gpu_peak_allocated_mb", "gpu_peak_reserved_mb", "host_rss_mb", "host_peak_rss_mb")


def clean(value):
    """JSON-safe scalar: non-finite floats become null (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def peak_memory_mb() -> float:
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class JsonlWriter:
    """Append-only JSONL, flushed and fsynced per record so tails never see half a step."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the whole run

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps({k: clean(v) for k, v in record.items()}) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def write_many(self, records: list[dict]) -> None:
        self.fh.write("".join(json.dumps({k: clean(v) for k, v in r.items()}) + "\n" for r in records))
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def progress_line(m: dict, max_steps: int, eta_s: float) -> str:
    eta = time.strftime("%H:%M:%S", time.gmtime(max(eta_s, 0))) if math.isfinite(eta_s) else "?"
    skipped = " (skipped)" if m.get("skipped") else ""
    return (f"step {m['step'] + 1}/{max_steps}  reward {m['mean_reward']:.3f}  "
            f"correct {m['correct_rate']:.3f}  λ {m['sepa_lambda']:.3f}  "
            f"{m['step_time_s']:.2f}s/step  ETA {eta}{skipped}")


class WandbLogger:
    """Logs to wandb only when [logging].wandb_project (or WANDB_PROJECT) is set."""

    def __init__(self, cfg, run_name: str, label: str, seed: int, run_dir: Path):
        self.run = None
        project = cfg.logging.wandb_project or os.environ.get("WANDB_PROJECT", "")
        if not project:
            return
        import wandb

        lg = cfg.logging
        tags = [label, f"seed{seed}"] + [t.strip() for t in lg.wandb_tags.split(",") if t.strip()]
        self.run = wandb.init(
            project=project, entity=lg.wandb_entity or None, group=lg.wandb_group or label,
            name=lg.wandb_run_name or run_name, tags=tags, config=cfg.to_dict(),
            dir=str(run_dir), id=_wandb_id(run_dir), resume="allow")
        # A resumed run redoes the steps after its checkpoint, and wandb drops a log whose
        # step is not above the run's last one: log on wandb's own (monotone) counter and
        # plot against train/step, so the redone steps are kept.
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")

    def log(self, metrics: dict) -> None:
        if self.run is None:
            return
        data = {f"train/{k}": v for k, v in metrics.items()
                if isinstance(v, (int, float, bool)) and k != "step" and clean(v) is not None}
        self.run.log({**data, "train/step": int(metrics["step"])})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def _wandb_id(run_dir: Path) -> str:
    """A stable id per run directory, so a resumed run continues the same wandb run."""
    path = run_dir / ".wandb_id"
    if path.exists():
        return path.read_text().strip()
    import uuid

    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id)
    return run_id


class Tee:
    """Duplicate a stream into a file (standalone runs write their own stdout.log/stderr.log)."""

    def __init__(self, stream, path: Path):
        self.stream, self.fh = stream, open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, text: str) -> int:
        self.fh.write(text)
        self.fh.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.fh.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self.stream, name)


def tee_std_streams(run_dir: Path) -> None:
    sys.stdout = Tee(sys.stdout, run_dir / "stdout.log")
    sys.stderr = Tee(sys.stderr, run_dir / "stderr.log")
