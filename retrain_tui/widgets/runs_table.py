"""The live runs table: one row per run, coloured status, a progress bar, latest metrics.

Rows are keyed by run name. When the visible set and order are unchanged only the cells
whose text changed are updated, so a refresh of 64 running runs costs a few cell updates,
not a table rebuild.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import DataTable

from retrain_tui.stats import ellipsize, format_duration, format_number, format_seconds

STATUS_STYLES = {"pending": "dim", "running": "bold cyan", "succeeded": "bold green",
                 "failed": "bold red", "killed": "bold magenta"}
COLUMNS = (("run", "run"), ("condition", "cond"), ("seed", "seed"), ("status", "status"),
           ("progress", "step/max"), ("mean_reward", "reward"), ("correct_rate", "correct"),
           ("loss", "loss"), ("sepa_lambda", "λ"), ("step_time_s", "s/step"),
           ("throttle_wait_s", "wait"), ("eta", "ETA"), ("attempt", "try"), ("gpus", "GPU"))
SORT_KEYS = ("run", "condition", "seed", "status", "progress", "mean_reward", "correct_rate",
             "eta")
STATUS_ORDER = {"failed": 0, "running": 1, "pending": 2, "killed": 3, "succeeded": 4}
# Below this width the condition and seed columns are left out: the run name holds both.
WIDE_ENOUGH = 130
NARROW_HIDDEN = ("condition", "seed")
# The GPU column (each run's share, from state.json) appears once some run has GPUs.
GPU_COLUMN = "gpus"
# Widest run name and condition label; longer ones are cut with an ellipsis (the detail
# screen shows them in full).
NAME_WIDTH, LABEL_WIDTH = 30, 24


def progress_cell(step: int, max_steps: int, width: int = 6) -> Text:
    frac = min(step / max_steps, 1.0) if max_steps else 0.0
    filled = round(frac * width)
    bar = Text("█" * filled, style="green") + Text("░" * (width - filled), style="dim")
    return bar + Text(f" {step}/{max_steps or '?'}")


def applies_sepa(label: str) -> bool:
    """Whether a condition label (`adv+transform~overrides`) names a SEPA transform: λ
    means nothing for the others, so their cell stays blank."""
    transform = label.split("~", 1)[0].partition("+")[2]
    return "sepa" in transform


def status_cell(row) -> Text:
    """A running run that the supervisor flags as stalled (no new metrics for too long)
    shows `stalled`, in yellow."""
    if getattr(row, "stalled", None):
        return Text("stalled", style="bold yellow")
    return Text(row.status, style=STATUS_STYLES.get(row.status, ""))


def row_cells(row) -> tuple:
    """One cell per entry of COLUMNS."""
    m = row.metrics
    return (
        ellipsize(row.name, NAME_WIDTH, keep_tail=len(row.name) - row.name.rfind("_s")),
        ellipsize(row.condition, LABEL_WIDTH), str(row.seed),
        status_cell(row),
        progress_cell(row.step, row.max_steps),
        format_number(m.get("mean_reward")), format_number(m.get("correct_rate")),
        format_number(m.get("loss")),
        format_number(m.get("sepa_lambda"), 2) if applies_sepa(row.condition) else "",
        format_seconds(m.get("step_time_s")), format_seconds(m.get("throttle_wait_s")),
        format_duration(row.eta_s), str(row.attempt),
        ",".join(str(g) for g in getattr(row, "gpus", ()) or ()),
    )


def sort_key(column: str):
    def key(row):
        if column == "progress":
            return row.step / row.max_steps if row.max_steps else 0.0
        if column == "status":
            return STATUS_ORDER.get(row.status, 9), row.name
        if column == "eta":
            return math.inf if math.isnan(row.eta_s) else row.eta_s
        if column in ("mean_reward", "correct_rate"):
            value = row.metrics.get(column, math.nan)
            return -math.inf if value is None or math.isnan(value) else value
        if column == "seed":
            return (0, row.seed) if isinstance(row.seed, int) else (1, str(row.seed))
        return getattr(row, {"run": "name"}.get(column, column), "")
    return key


class RunsTable(DataTable):
    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._order: list[str] = []
        self._cells: dict[str, tuple] = {}
        self._narrow: bool | None = None
        self._last_show: tuple | None = None
        self._gpus = False

    def on_mount(self) -> None:
        self._set_columns(narrow=False)

    def on_resize(self) -> None:
        narrow = self.size.width < WIDE_ENOUGH
        if narrow != self._narrow:
            self._set_columns(narrow, self._gpus)
            if self._last_show is not None:
                self.show(*self._last_show)

    def _set_columns(self, narrow: bool, gpus: bool = False) -> None:
        self._narrow, self._gpus = narrow, gpus
        self.clear(columns=True)
        self._keep = [i for i, (key, _) in enumerate(COLUMNS)
                      if not (narrow and key in NARROW_HIDDEN) and (gpus or key != GPU_COLUMN)]
        for i in self._keep:
            key, title = COLUMNS[i]
            self.add_column(title, key=key)
        self._order, self._cells = [], {}

    @property
    def selected_run(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    def show(self, rows: list, sort: str = "run", reverse: bool = False,
             status: str | None = None, condition: str | None = None) -> None:
        visible = [r for r in rows if (status is None or r.status == status)
                   and (condition is None or r.condition == condition)]
        visible.sort(key=sort_key(sort), reverse=reverse)
        order = [r.name for r in visible]
        self._last_show = (rows, sort, reverse, status, condition)
        if any(getattr(r, "gpus", ()) for r in rows) != self._gpus:
            self._set_columns(bool(self._narrow), not self._gpus)
        cells = {r.name: tuple(row_cells(r)[i] for i in self._keep) for r in visible}
        if order != self._order:
            selected = self.selected_run
            self.clear()
            for name in order:
                self.add_row(*cells[name], key=name)
            if selected in order:
                self.move_cursor(row=order.index(selected), animate=False)
        else:
            keys = [COLUMNS[i][0] for i in self._keep]
            for name in order:
                old = self._cells.get(name)
                for i, cell in enumerate(cells[name]):
                    if old is None or str(old[i]) != str(cell) or (
                            isinstance(cell, Text) and old[i].style != cell.style):
                        self.update_cell(name, keys[i], cell, update_width=True)
        self._order, self._cells = order, cells
