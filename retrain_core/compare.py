"""Is condition X better than the baseline? Per-seed comparisons of a campaign's runs.

Each run is summarised by one number (its metric over a window of steps: the mean of the
last N rows, or the row at step N). Per condition: the mean and a 95% t interval across
seeds. Against the baseline, differences are *paired* by seed (same seed = same data
order), which removes the seed-to-seed spread both conditions share: a t interval and a
seeded bootstrap interval of the mean difference, the smallest effect the campaign could
detect at its seed count (paired t test, α = 0.05 two-sided, power 0.8), and a verdict.

Rows come from `runs/<name>/metrics.jsonl` (training) or, when runs evaluate on a
held-out set, `runs/<name>/eval.jsonl` (`--source eval`; `auto` prefers it when present).
Used by `retrain compare` (compare_cli.py) and the TUI's compare screen.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from retrain_core.stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    POWER,
    Interval,
    bootstrap_interval,
    min_detectable_effect,
    t_interval,
)
from retrain_core.supervisor.files import read_json
from retrain_core.tail import JsonlTail

SOURCES = ("auto", "train", "eval")
EVAL_FILE = "eval.jsonl"
METRICS_FILE = "metrics.jsonl"


class CompareError(Exception):
    """A comparison that cannot be made, explained (which file, which option)."""


@dataclass(frozen=True)
class Window:
    kind: str  # "last" (mean of the last n rows) or "step" (the row at step n)
    n: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.n}"


def parse_window(text: str) -> Window:
    m = re.fullmatch(r"\s*(last|step)\s*:\s*(\d+)\s*", text or "")
    if not m or (m.group(1) == "last" and int(m.group(2)) < 1):
        raise CompareError(f"--window {text!r}: expected last:N (N ≥ 1, mean of the last N rows) "
                           "or step:N (the row at step N)")
    return Window(m.group(1), int(m.group(2)))


def is_rate(metric: str) -> bool:
    """Rates are shown in percentage points."""
    return metric.endswith("_rate")


@dataclass
class RunValue:
    name: str
    condition: str
    seed: object
    status: str
    value: float | None      # None: no row in the window
    last_step: int | None
    rows: int


@dataclass
class ConditionResult:
    label: str
    runs: list[RunValue]
    across_seeds: Interval
    curve: list[float] = field(default_factory=list)  # mean over seeds per step (sparkline)
    diff: Interval | None = None        # paired t interval of (this − baseline); None for the baseline
    bootstrap: Interval | None = None
    mde: float | None = None
    verdict: str = ""

    def to_dict(self) -> dict:
        def num(x):
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
        return {"condition": self.label, "n": self.across_seeds.n,
                "across_seeds": self.across_seeds.to_dict(),
                "paired_diff": self.diff.to_dict() if self.diff else None,
                "bootstrap_diff": self.bootstrap.to_dict() if self.bootstrap else None,
                "min_detectable_effect": num(self.mde), "verdict": self.verdict,
                "runs": [{"run": r.name, "seed": r.seed, "status": r.status, "value": num(r.value),
                          "last_step": r.last_step, "rows": r.rows} for r in self.runs]}


@dataclass
class Comparison:
    campaign: str
    directory: Path
    metric: str
    window: Window
    source: str        # "train" or "eval" (what was read)
    baseline: str
    conditions: list[ConditionResult]
    metrics_seen: list[str]

    def to_dict(self) -> dict:
        return {"campaign": self.campaign, "dir": str(self.directory), "metric": self.metric,
                "window": str(self.window), "source": self.source, "baseline": self.baseline,
                "unit": "fraction (shown as pp)" if is_rate(self.metric) else "metric units",
                "method": {"interval": f"two-sided {int((1 - ALPHA) * 100)}% Student t",
                           "paired_by": "seed",
                           "bootstrap": f"percentile, {BOOTSTRAP_RESAMPLES} resamples, seed "
                                        f"{BOOTSTRAP_SEED}",
                           "min_detectable_effect": f"paired t test, alpha {ALPHA} two-sided, "
                                                    f"power {POWER}"},
                "conditions": [c.to_dict() for c in self.conditions]}


def read_rows(run_dir: Path, source: str) -> list[dict]:
    """The run's rows with a numeric step; eval rows keep one mode (greedy when present)."""
    path = run_dir / (EVAL_FILE if source == "eval" else METRICS_FILE)
    if not path.exists():
        return []
    with JsonlTail(path) as tail:
        rows = [r for r in tail.read_new() if isinstance(r.get("step"), int)]
    if source == "eval":
        modes = {r.get("mode") for r in rows}
        keep = "greedy" if "greedy" in modes else next(iter(sorted(modes, key=str)), None)
        rows = [r for r in rows if r.get("mode") == keep]
    return rows


def _value(rows: list[dict], metric: str, window: Window) -> float | None:
    vals = [(r["step"], float(r[metric])) for r in rows
            if isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)
            and not math.isnan(float(r[metric]))]
    if window.kind == "step":
        at = [v for s, v in vals if s == window.n]
        return at[-1] if at else None
    tail = [v for _, v in vals[-window.n:]]
    return sum(tail) / len(tail) if tail else None


def _curve(rows_by_run: list[list[dict]], metric: str) -> list[float]:
    by_step: dict[int, list[float]] = {}
    for rows in rows_by_run:
        for r in rows:
            v = r.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                by_step.setdefault(r["step"], []).append(float(v))
    return [sum(v) / len(v) for _, v in sorted(by_step.items())]


def format_effect(x: float, metric: str, signed: bool = True) -> str:
    if x is None or math.isnan(x):
        return "-"
    if is_rate(metric):
        return f"{x * 100:+.1f} pp" if signed else f"{x * 100:.1f} pp"
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def _bound(x: float, scale: int) -> str:
    return f"{x:+.1f}" if scale == 100 else f"{x:+.3g}"


def _verdict(label: str, baseline: str, diff: Interval, mde: float, metric: str) -> str:
    if diff.n < 2:
        return (f"{label} − {baseline}: {diff.n} paired seed{'s' if diff.n != 1 else ''}; "
                "at least 2 are needed to say anything")
    scale = 100 if is_rate(metric) else 1
    head = (f"{label} − {baseline} = {format_effect(diff.mean, metric)} "
            f"[{_bound(diff.low * scale, scale)}, {_bound(diff.high * scale, scale)}], n = {diff.n}")
    if diff.excludes_zero():
        return f"{head}: {label} is {'higher' if diff.mean > 0 else 'lower'}"
    return (f"{head}: no detectable difference (could detect "
            f"≥ {format_effect(mde, metric, signed=False)})")


def compare_campaign(directory: str | Path, baseline: str | None = None,
                     metric: str = "correct_rate", window: str | Window = "last:20",
                     source: str = "auto") -> Comparison:
    root = Path(directory)
    manifest = read_json(root / "manifest.json", None)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
        raise CompareError(f"{root}: not a campaign directory (no readable manifest.json)")
    if source not in SOURCES:
        raise CompareError(f"--source {source!r}: expected one of {', '.join(SOURCES)}")
    win = parse_window(window) if isinstance(window, str) else window
    state = read_json(root / "state.json", {}) or {}
    entries = [e for e in manifest["runs"] if isinstance(e, dict) and "name" in e]
    if source == "auto":
        has_eval = any((root / e.get("dir", f"runs/{e['name']}") / EVAL_FILE).exists() for e in entries)
        source = "eval" if has_eval else "train"
    labels = list(dict.fromkeys([c.get("label") for c in manifest.get("conditions", [])
                                 if isinstance(c, dict)] + [e.get("condition") for e in entries]))
    labels = [lb for lb in labels if lb]
    if not labels:
        raise CompareError(f"{root / 'manifest.json'}: the campaign lists no conditions")
    baseline = baseline or labels[0]
    if baseline not in labels:
        raise CompareError(f"--baseline {baseline!r}: no such condition in {root.name} "
                           f"(conditions: {', '.join(labels)})")

    rows_of: dict[str, list[dict]] = {}
    seen: set[str] = set()
    for e in entries:
        rows = read_rows(root / e.get("dir", f"runs/{e['name']}"), source)
        rows_of[e["name"]] = rows
        for r in rows[-1:]:
            seen.update(k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    if seen and metric not in seen:
        close = [k for k in sorted(seen) if metric in k or k in metric]
        raise CompareError(f"--metric {metric!r}: not in the {source} rows of {root.name}"
                           + (f" (did you mean {close[0]!r}?)" if close else "")
                           + f"; numeric fields: {', '.join(sorted(seen))}")

    results: list[ConditionResult] = []
    for label in labels:
        runs = []
        for e in (e for e in entries if e.get("condition") == label):
            rows = rows_of[e["name"]]
            runs.append(RunValue(e["name"], label, e.get("seed"),
                                 state.get("runs", {}).get(e["name"], {}).get("status", "unknown"),
                                 _value(rows, metric, win), rows[-1]["step"] if rows else None,
                                 len(rows)))
        values = [r.value for r in runs if r.value is not None]
        results.append(ConditionResult(label, runs, t_interval(values),
                                       _curve([rows_of[r.name] for r in runs], metric)))

    base = next(c for c in results if c.label == baseline)
    base_by_seed = {r.seed: r.value for r in base.runs if r.value is not None}
    for c in results:
        if c.label == baseline:
            c.verdict = "baseline"
            continue
        diffs = [r.value - base_by_seed[r.seed] for r in c.runs
                 if r.value is not None and r.seed in base_by_seed]
        c.diff, c.bootstrap = t_interval(diffs), bootstrap_interval(diffs)
        c.mde = min_detectable_effect(diffs)
        c.verdict = _verdict(c.label, baseline, c.diff, c.mde, metric)
    return Comparison(manifest.get("campaign", root.name), root, metric, win, source, baseline,
                      results, sorted(seen))
