"""Stalled runs: running, but their metrics have not advanced for too long.

Bound: max(floor, 5 × the run's median step time over its last 20 steps); the floor is
5 minutes (`RETRAIN_STALL_FLOOR_S` overrides it, for tests and for impatient users).
"Advanced" means metrics.jsonl was written since the attempt started. Before the attempt's
first metrics row, any write to its logs (stdout, stderr, wrapper log: model downloads
print progress there) also counts, so a slow model load is not taken for a hang.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from retrain_core.tail import read_last_records

FLOOR_S = 300.0
FACTOR = 5.0
FLOOR_ENV = "RETRAIN_STALL_FLOOR_S"
RECENT_ROWS = 20
LIFE_SIGNS = ("stdout.log", "stderr.log", "wrapper.log")


def floor_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(FLOOR_ENV, FLOOR_S)))
    except ValueError:
        return FLOOR_S


def stall_bound(step_times: list[float], floor_s: float) -> float:
    times = [t for t in step_times if isinstance(t, (int, float)) and t >= 0]
    return max(floor_s, FACTOR * statistics.median(times)) if times else floor_s


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@dataclass
class Progress:
    """What the supervisor knows of one run's metrics (re-read only when the file changed)."""
    signature: tuple | None = None
    rows: list[dict] = field(default_factory=list)
    mtime: float | None = None

    @property
    def last(self) -> dict | None:
        return self.rows[-1] if self.rows else None

    @property
    def step_times(self) -> list[float]:
        return [r["step_time_s"] for r in self.rows if isinstance(r.get("step_time_s"), (int, float))]


class ProgressReader:
    def __init__(self) -> None:
        self._runs: dict[str, Progress] = {}

    def read(self, name: str, run_dir: Path) -> Progress:
        p = self._runs.setdefault(name, Progress())
        path = run_dir / "metrics.jsonl"
        try:
            st = path.stat()
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            sig = None
        if sig != p.signature:
            p.signature = sig
            p.rows = read_last_records(path, RECENT_ROWS) if sig else []
            p.mtime = st.st_mtime if sig else None
        return p


def last_activity(run_dir: Path, progress: Progress, launched_at: float) -> float:
    """When the run last showed progress in this attempt (launch time at the earliest)."""
    if progress.mtime is not None and progress.mtime >= launched_at:
        return progress.mtime
    signs = [t for t in (_mtime(run_dir / n) for n in LIFE_SIGNS) if t is not None]
    return max([launched_at, *signs])


def check_stall(run_dir: Path, progress: Progress, launched_at: float, now: float,
                floor_s: float) -> dict | None:
    """`{"since", "idle_s", "bound_s"}` when the run is stalled, else None."""
    bound = stall_bound(progress.step_times, floor_s)
    active = last_activity(run_dir, progress, launched_at)
    idle = now - active
    if idle <= bound:
        return None
    return {"since": active + bound, "idle_s": round(idle, 1), "bound_s": round(bound, 1)}
