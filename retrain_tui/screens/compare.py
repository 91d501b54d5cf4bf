"""The compare screen (`C` in the monitor): `retrain compare`'s table for the campaign on
screen, with a per-condition sparkline of the metric's mean over seeds. `b` cycles the
baseline, `m` the metric, `w` the window; it recomputes every few seconds while runs go on."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from retrain_core.compare import (
    CompareError,
    Comparison,
    ConditionResult,
    compare_campaign,
    is_rate,
)

METRICS = ("correct_rate", "mean_reward", "running_correct_rate", "loss")
WINDOWS = ("last:20", "last:5", "last:50", "last:1")
BARS = "▁▂▃▄▅▆▇█"
REFRESH_S = 5.0


def _fmt(x: float | None, rate: bool, signed: bool) -> str:
    if x is None or math.isnan(x):
        return "-"
    if rate:
        return f"{x * 100:+.1f}" if signed else f"{x * 100:.1f}"
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def compact_cells(cond: ConditionResult, metric: str) -> list[str]:
    """condition, n, level±half, Δ [low,high], bootstrap [low,high], detectable: narrow
    forms of `retrain compare`'s table (rates in percent / percentage points)."""
    rate = is_rate(metric)
    a = cond.across_seeds
    level = _fmt(a.mean, rate, False) + (f"±{_fmt(a.half, rate, False)}" if a.n >= 2 else "")
    if cond.diff is None:
        return [cond.label, str(a.n), level, "-", "-", "-"]
    d, b = cond.diff, cond.bootstrap
    delta = _fmt(d.mean, rate, True) + (f" [{_fmt(d.low, rate, True)},{_fmt(d.high, rate, True)}]"
                                        if d.n >= 2 else "")
    boot = f"[{_fmt(b.low, rate, True)},{_fmt(b.high, rate, True)}]" if b.n >= 2 else "-"
    return [cond.label, str(a.n), level, delta, boot, f"≥{_fmt(cond.mde, rate, False)}"]


def short_verdict(cond: ConditionResult) -> str:
    if cond.diff is None:
        return "baseline"
    if cond.diff.n < 2:
        return "too few"
    if cond.diff.excludes_zero():
        return "higher" if cond.diff.mean > 0 else "lower"
    return "no diff."


def sparkline(values: list[float], width: int = 12) -> str:
    """The curve in `width` cells (bucket means), scaled to its own range."""
    if not values:
        return ""
    if len(values) > width:
        size = len(values) / width
        values = [sum(chunk) / len(chunk) for chunk in
                  (values[int(i * size):max(int((i + 1) * size), int(i * size) + 1)] for i in range(width))]
    low, high = min(values), max(values)
    span = high - low
    return "".join(BARS[0 if span == 0 else min(7, int((v - low) / span * 8))] for v in values)


VERDICT_STYLES = {"higher": "bold green", "lower": "bold red", "baseline": "dim"}


class CompareScreen(Screen):
    DEFAULT_CSS = """
    #compare-summary { height: auto; padding: 0 1; color: $text-muted; }
    #compare-table { height: 1fr; }
    #compare-verdicts { height: auto; max-height: 8; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("b", "cycle_baseline", "Baseline", id="compare_baseline",
                tooltip="Compare against the next condition"),
        Binding("m", "cycle_metric", "Metric", id="compare_metric",
                tooltip="Compare on the next metric"),
        Binding("w", "cycle_window", "Window", id="compare_window",
                tooltip="Change how many final steps each run's value averages"),
        Binding("question_mark", "app.help", "Keys", id="help",
                tooltip="Every key of this screen, with what it does"),
        Binding("escape,C", "back", "Back", id="back", tooltip="Return to the monitor"),
        Binding("q", "quit", "Quit", id="quit",
                tooltip="Leave retrain-tui; the campaign keeps running"),
    ]

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = Path(directory)
        self.metric, self.window, self.baseline = METRICS[0], WINDOWS[0], None
        self.comparison: Comparison | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◉")
        yield Static("computing…", id="compare-summary", markup=False)
        yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="compare-verdicts", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "retrain-tui · compare"
        self.sub_title = self.directory.name
        self.recompute()
        if self.app.start_watchers:
            self.set_interval(REFRESH_S, self.recompute)

    @work(thread=True, exclusive=True, group="compare")
    def recompute(self) -> None:
        try:
            comp = compare_campaign(self.directory, self.baseline, self.metric, self.window)
        except CompareError as exc:
            self.app.call_from_thread(self.show_error, str(exc))
            return
        self.app.call_from_thread(self.show, comp)

    def show_error(self, message: str) -> None:
        self.query_one("#compare-summary", Static).update(f"{self.metric}, window {self.window}: "
                                                          f"{message}")

    def show(self, comp: Comparison) -> None:
        self.comparison = comp
        self.baseline = comp.baseline
        self.query_one("#compare-summary", Static).update(
            f"{comp.metric} · {comp.window} · {comp.source} rows · baseline {comp.baseline} · "
            "paired by seed")
        table = self.query_one("#compare-table", DataTable)
        cursor = table.cursor_row
        table.clear(columns=True)
        # Most telling first, so that 80 columns show the verdict and the trend.
        unit = "pp" if is_rate(comp.metric) else ""
        table.add_columns("condition", "n", "level" + (" %" if unit else ""),
                          f"Δ {unit} (t 95%)".replace("  ", " "), "verdict", "trend", "bootstrap",
                          "detect")
        for cond in comp.conditions:
            verdict = short_verdict(cond)
            table.add_row(*compact_cells(cond, comp.metric)[:4],
                          Text(verdict, style=VERDICT_STYLES.get(verdict, "")),
                          Text(sparkline(cond.curve), style="cyan"),
                          *compact_cells(cond, comp.metric)[4:], key=cond.label)
        if cursor < table.row_count:
            table.move_cursor(row=cursor)
        self.query_one("#compare-verdicts", Static).update(
            "\n".join(c.verdict for c in comp.conditions if c.diff is not None))

    def action_cycle_baseline(self) -> None:
        if self.comparison:
            labels = [c.label for c in self.comparison.conditions]
            self.baseline = labels[(labels.index(self.comparison.baseline) + 1) % len(labels)]
            self.recompute()

    def action_cycle_metric(self) -> None:
        self.metric = METRICS[(METRICS.index(self.metric) + 1) % len(METRICS)]
        self.recompute()

    def action_cycle_window(self) -> None:
        self.window = WINDOWS[(WINDOWS.index(self.window) + 1) % len(WINDOWS)]
        self.recompute()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_quit(self) -> None:
        self.app.exit()
