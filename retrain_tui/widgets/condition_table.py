"""Seeds aggregated per condition: mean ± 95% CI of the latest correct rate and reward
(the CI is the half-width, shown compactly as `mean±half`)."""

from __future__ import annotations

from textual.widgets import DataTable

from retrain_tui.stats import ellipsize, format_mean_ci

LABEL_WIDTH = 24  # longer labels end with an ellipsis: the table shares the row with a plot


def status_summary(statuses: dict) -> str:
    short = {"running": "run", "pending": "pend", "succeeded": "ok", "failed": "fail",
             "killed": "kill"}
    return " ".join(f"{n}{short.get(s, s)}" for s, n in sorted(statuses.items()))


class ConditionTable(DataTable):
    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: list[tuple] = []

    def on_mount(self) -> None:
        # no seed-count column: the runs summary ("1ok 1run") counts the seeds already
        self.add_columns("condition", "correct±CI", "reward±CI", "steps", "runs")

    def show(self, conditions: list) -> None:
        rows = [(ellipsize(c.label, LABEL_WIDTH), format_mean_ci(*c.correct), format_mean_ci(*c.reward),
                 f"{c.steps_done}/{c.steps_total}", status_summary(c.statuses))
                for c in conditions]
        if rows == self._rows:
            return
        cursor = self.cursor_row
        self.clear()
        for row in rows:
            self.add_row(*row)
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
        self._rows = rows
