"""Small statistics for the monitor: mean ± 95% confidence half-width across seeds."""

from __future__ import annotations

import math
import statistics

from retrain_core.stats import t_ppf


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student t quantile (exact: retrain_core.stats, the one used by compare)."""
    return t_ppf(0.975, df) if df > 0 else math.nan


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% CI); the half-width is nan with fewer than 2 values."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return mean, math.nan
    sem = statistics.stdev(vals) / math.sqrt(len(vals))
    return mean, t_critical_95(len(vals) - 1) * sem


def median(values: list[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def format_duration(seconds: float | None) -> str:
    """`1h02m`, `4m05s`, `12s`; `-` when unknown."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return "-"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def format_number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def format_seconds(value: float | None) -> str:
    """Seconds in one fixed format, `0.00`..`123.45`: a column never mixes in `1.2e-04`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}"


def format_mean_ci(mean: float, half: float, digits: int = 2) -> str:
    """Compact, `0.53±0.79`: the condition table must fit half of a 100-column screen."""
    if math.isnan(mean):
        return "-"
    if math.isnan(half):
        return format_number(mean, digits)
    return f"{mean:.{digits}f}±{half:.{digits}f}"


def ellipsize(text: str, width: int, keep_tail: int = 0) -> str:
    """`text` cut to `width` characters with an ellipsis where it was cut: at the end, or
    before the last `keep_tail` characters (a run name keeps its `_s42`)."""
    if len(text) <= width:
        return text
    tail = text[len(text) - keep_tail:] if 0 < keep_tail < width else ""
    return text[:max(width - 1 - len(tail), 0)] + "…" + tail
