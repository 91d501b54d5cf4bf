"""Capacity planning: how many runs and steps a campaign is, and how long it takes.

The median step time comes, in order of precedence, from an explicit `step_time_s`, an
explicit GPU preset, pilot runs found under the logs directory (same model and
B, G, max_tokens), the machine's preset when asked to detect it (its GPU by `nvidia-smi`,
or the CPU preset when there is no GPU), or nowhere ("unknown": counts are still given,
hours are not). The estimate states its source.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import statistics
import subprocess
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import gpus
from .config import Campaign

# Seconds per step for Qwen3-4B at the standard profile B=8, G=16, max_tokens=10240 (a
# 500-step run's hours / 500), scaled by token budget; configs/README.md lists them.
GPU_PRESETS: dict[str, float] = {"h100": 15.1, "a100": 25.2, "4090": 45.4}
PRESET_TOKEN_BUDGET = 8 * 16 * 10240
GPU_NAME_MARKERS = {"h100": "H100", "a100": "A100", "4090": "4090"}
# The CPU preset: seconds per step of one run of configs/demo.toml's shape (builtin:tiny-arith,
# B=4, G=8, max_tokens=40) on a 2-core box while the demo runs as configured, two runs at a
# time: twice one run alone, as two share the cores. docs/BENCHMARKS.md ("CPU preset") has
# the command and the figures, quiet and loaded. Scaled by the token budget like the GPU
# presets.
CPU_PRESET_S = 1.8
CPU_PRESET_TOKEN_BUDGET = 4 * 8 * 40


@dataclass
class CapacityEstimate:
    runs: int
    total_steps: int
    completions_per_step: int  # B x G (of the first condition)
    token_budget_per_step: int  # B x G x max_tokens, an upper bound
    effective_parallelism: int
    parallelism_bound: str  # which of max_workers / runs / GPUs / sequential sets it
    parallelism_detail: str  # e.g. "4 GPUs ÷ 1 per run"
    stagger: float  # seconds added to the wall time by staggered launches
    median_step_time_s: float | None  # of the first condition's shape
    step_time_source: str  # "given" | "preset:<gpu>" | "pilot" | "unknown"
    sequential_hours: float | None
    wall_hours: float | None
    pilot_files: list[str] = field(default_factory=list)
    detail: str = ""  # one human sentence on where the step time came from

    def to_dict(self) -> dict:
        return asdict(self)


def token_budget(batch_size: int, group_size: int, max_tokens: int) -> int:
    return batch_size * group_size * max_tokens


def preset_step_time(gpu: str, budget: int) -> float:
    """The GPU preset scaled linearly from the docs' 8×16×10240 profile to `budget`."""
    if gpu == "cpu":
        return CPU_PRESET_S * budget / CPU_PRESET_TOKEN_BUDGET
    return GPU_PRESETS[gpu] * budget / PRESET_TOKEN_BUDGET


def detect_gpu() -> str | None:
    """Preset name of the first GPU `nvidia-smi` reports, or None (no tool, unknown GPU)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               check=False, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for preset, marker in GPU_NAME_MARKERS.items():
        if marker in names:
            return preset
    return None


def _shape_of(config_toml: Path) -> tuple | None:
    try:
        doc = tomllib.loads(config_toml.read_text(encoding="utf-8"))
        t = doc.get("training", {})
        return (doc.get("model", {}).get("model", ""), t.get("batch_size"), t.get("group_size"),
                t.get("max_tokens"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return None


def _step_times(metrics: Path) -> list[float]:
    times = []
    try:
        with metrics.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a partial last line of a live run
                value = row.get("step_time_s") if isinstance(row, dict) else None
                if isinstance(value, (int, float)) and not row.get("skipped") and value > 0:
                    times.append(float(value))
    except OSError:
        pass
    return times


def find_pilots(logs_dir: str | Path, shape: tuple) -> tuple[list[float], list[str]]:
    """Step times of non-skipped steps of every run under `logs_dir` with this shape."""
    index = PilotIndex(logs_dir)
    index.refresh()
    return index.find(shape)


class PilotIndex:
    """Pilot runs under a logs directory, kept between estimates: `refresh` walks the
    directory and re-reads only the runs whose config.toml or metrics.jsonl changed, `find`
    reads nothing. The TUI estimates on every keystroke and refreshes on a timer, so typing
    never waits on a walk of a large logs/ and a parse of every metrics.jsonl."""

    def __init__(self, logs_dir: str | Path):
        self.logs_dir = Path(logs_dir)
        self.reads = 0  # metrics.jsonl files parsed so far (tests check that typing adds none)
        # run dir -> (stamps of its two files, shape, step times); replaced whole, so a
        # reader in another thread sees the old mapping or the new one.
        self._runs: dict[Path, tuple[tuple, tuple | None, list[float]]] = {}

    def refresh(self) -> bool:
        """Bring the index up to date; True when some pilot appeared, changed or went."""
        runs: dict[Path, tuple[tuple, tuple | None, list[float]]] = {}
        if self.logs_dir.is_dir():
            for dirpath, dirnames, filenames in os.walk(self.logs_dir):
                dirnames[:] = sorted(d for d in dirnames if d != "checkpoints")  # adapters
                if "metrics.jsonl" not in filenames or "config.toml" not in filenames:
                    continue
                run_dir = Path(dirpath)
                try:
                    stamp = tuple((st.st_mtime_ns, st.st_size) for st in (
                        (run_dir / "config.toml").stat(), (run_dir / "metrics.jsonl").stat()))
                except OSError:
                    continue  # removed while we looked
                known = self._runs.get(run_dir)
                if known is not None and known[0] == stamp:
                    runs[run_dir] = known
                    continue
                self.reads += 1
                runs[run_dir] = (stamp, _shape_of(run_dir / "config.toml"),
                                 _step_times(run_dir / "metrics.jsonl"))
        changed = runs != self._runs
        self._runs = runs
        return changed

    def find(self, shape: tuple) -> tuple[list[float], list[str]]:
        """Step times and metrics files of the indexed runs with this shape."""
        times: list[float] = []
        files: list[str] = []
        for run_dir, (_, run_shape, found) in self._runs.items():
            if run_shape == shape and found:
                times.extend(found)
                files.append(str(run_dir / "metrics.jsonl"))
        return times, files


def estimate(campaign: Campaign, gpu: str | None = None, step_time_s: float | None = None,
             logs_dir: str | Path = "logs", detect: bool = False,
             pilots: PilotIndex | None = None) -> CapacityEstimate:
    """The capacity estimate `retrain explain` prints (configs/README.md); `detect` lets
    `nvidia-smi` pick a preset after pilots."""
    if gpu is not None and gpu not in GPU_PRESETS and gpu != "cpu":
        raise ValueError(f"unknown preset {gpu!r}; known: {', '.join(GPU_PRESETS)}, cpu")
    runs = campaign.runs
    settings = campaign.settings
    first = runs[0].config.training
    slots, gpu_detail = gpu_slots_for(campaign.base.backend.devices, settings.gpus_per_run)
    if settings.launcher == "ray":  # the cluster's GPUs, placed by Ray, not this machine's pool
        slots, gpu_detail = None, "Ray places runs on the cluster's GPUs"
    width = parallelism(settings.parallel, settings.max_workers, len(runs), slots, gpu_detail)
    parallelism_n = width.runs_at_once
    stagger = settings.stagger_seconds * (parallelism_n - 1) if settings.parallel else 0.0

    source, detail, pilot_files = "unknown", "no step time: give --step-time or --gpu", []
    per_shape: dict[tuple, float | None] = {}
    shapes = {_run_shape(r) for r in runs}
    if step_time_s is not None:
        source, detail = "given", f"given step time {step_time_s:g} s"
        per_shape = {s: float(step_time_s) for s in shapes}
    elif gpu is not None:
        source, detail = f"preset:{gpu}", _preset_detail(gpu, "chosen")
        per_shape = {s: preset_step_time(gpu, token_budget(*s[1:])) for s in shapes}
    else:
        for shape in shapes:
            times, files = pilots.find(shape) if pilots else find_pilots(logs_dir, shape)
            per_shape[shape] = statistics.median(times) if times else None
            pilot_files.extend(files)
        if all(v is not None for v in per_shape.values()):
            source = "pilot"
            detail = f"median step time of {len(pilot_files)} pilot run(s) under {logs_dir}"
        else:
            found = detect_preset() if detect else None
            if found:
                source, detail = f"preset:{found}", _preset_detail(
                    found, "no GPU found" if found == "cpu" else "detected with nvidia-smi")
                per_shape = {s: preset_step_time(found, token_budget(*s[1:])) for s in shapes}
            else:
                per_shape, pilot_files = {}, []

    total_steps = sum(r.config.training.max_steps for r in runs)
    median = per_shape.get(_run_shape(runs[0]))
    sequential = wall = None
    if per_shape:
        seconds = sum(r.config.training.max_steps * per_shape[_run_shape(r)] for r in runs)
        sequential = seconds / 3600
        wall = (seconds / parallelism_n + stagger) / 3600
    return CapacityEstimate(
        runs=len(runs), total_steps=total_steps,
        completions_per_step=first.batch_size * first.group_size,
        token_budget_per_step=token_budget(first.batch_size, first.group_size, first.max_tokens),
        effective_parallelism=parallelism_n, parallelism_bound=width.bound,
        parallelism_detail=width.detail, stagger=stagger, median_step_time_s=median,
        step_time_source=source, sequential_hours=sequential, wall_hours=wall,
        pilot_files=sorted(set(pilot_files)), detail=detail)


@functools.lru_cache(maxsize=1)
def detect_preset() -> str | None:
    """The preset for this machine: its GPU's, `cpu` when there is no `nvidia-smi` at all,
    None for a GPU without a preset. Asked once per process: the TUI estimates on every
    keystroke and the hardware does not change under it."""
    found = detect_gpu()
    if found is None and not shutil.which("nvidia-smi"):
        return "cpu"
    return found


def _run_shape(run) -> tuple:
    t = run.config.training
    return (run.config.model.model, t.batch_size, t.group_size, t.max_tokens)


def _preset_detail(gpu: str, how: str) -> str:
    if gpu == "cpu":
        return (f"CPU preset ({how}): {CPU_PRESET_S} s/step, the tiny model at 4×8×40 tokens, "
                "2 runs on 2 idle cores, scaled by the token budget; a busy box is slower")
    return (f"{gpu.upper()} preset ({how}): {GPU_PRESETS[gpu]} s/step at 8×16×10240 tokens, "
            "scaled by the token budget")


@dataclass
class Parallelism:
    runs_at_once: int
    bound: str  # what limits it: "sequential" | "runs" | "max_workers" | "GPUs"
    detail: str  # one phrase for people, e.g. "4 GPUs ÷ 1 per run"


def parallelism(parallel: bool, max_workers: int | None, runs: int, gpu_slots: int | None = None,
                gpu_detail: str = "") -> Parallelism:
    """Runs at once = min(max_workers, runs, pool ÷ gpus_per_run), naming the bound that applies.

    `max_workers` None (or a manifest's 0) sets no bound of its own; `gpu_slots` is None when
    placement is off (no GPUs in the pool). On a tie the more
    fundamental bound is named: runs, then GPUs, then max_workers.
    """
    if not parallel:
        return Parallelism(1, "sequential", "parallel = false")
    runs = max(runs, 1)
    bounds = [(runs, "runs", f"{runs} run{'s' * (runs != 1)}")]
    if gpu_slots is not None:
        bounds.append((max(gpu_slots, 1), "GPUs", gpu_detail or f"{gpu_slots} GPU slot(s)"))
    if max_workers:
        bounds.append((max_workers, "max_workers", f"max_workers = {max_workers}"))
    n, bound, detail = min(bounds, key=lambda b: b[0])
    return Parallelism(n, bound, detail)


def effective_parallelism(parallel: bool, max_workers: int | None, runs: int,
                          gpu_slots: int | None = None) -> int:
    """Runs at once: min(max_workers or runs, runs, GPU slots) when parallel, else 1."""
    return parallelism(parallel, max_workers, runs, gpu_slots).runs_at_once


def gpu_slots_for(devices: str, gpus_per_run: int, pool: list[int] | None = None
                  ) -> tuple[int | None, str]:
    """(runs the GPU pool holds at once or None when it has no GPUs, a phrase saying why)."""
    pool = gpus.resolve_pool(devices) if pool is None else pool
    slots = gpus.slots(pool, gpus_per_run)
    if slots is None:
        return None, ""
    return slots, f"{len(pool)} GPU{'s' * (len(pool) != 1)} ÷ {gpus_per_run} per run"


def campaign_parallelism(manifest: dict, state: dict | None, runs: int) -> Parallelism:
    """Parallelism of a launched campaign: the pool its supervisor uses (state.json), else
    the one resolved at creation (manifest.json). Odd values (a hand-edited file) count
    as absent."""
    def count(value, default: int) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default

    sup = (state or {}).get("supervisor") if isinstance(state, dict) else None
    pool = sup.get("gpu_pool") if isinstance(sup, dict) else None
    if not isinstance(pool, list):
        pool = manifest.get("gpu_pool")
    pool = [g for g in pool if isinstance(g, int)] if isinstance(pool, list) else []
    slots, detail = gpu_slots_for("", max(1, count(manifest.get("gpus_per_run"), 1)), pool)
    return parallelism(bool(manifest.get("parallel")), count(manifest.get("max_workers"), 0),
                       runs, slots, detail)


def eta_seconds(remaining_steps: int, step_times: Iterable[float], parallelism: int = 1
                ) -> float | None:
    """Live ETA: remaining steps × median observed step time / parallelism (None: no data)."""
    observed: Sequence[float] = [t for t in step_times if t is not None and t > 0]
    if not observed:
        return None
    return max(0, remaining_steps) * statistics.median(observed) / max(1, parallelism)


def format_hours(hours: float | None) -> str:
    if hours is None:
        return "unknown"
    if hours * 60 < 1:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:,.1f} h"
