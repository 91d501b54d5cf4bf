"""The LoRA-Squeeze panel: the variance table of `squeeze/analysis.json` with the
recommended rank highlighted and the worst module named, as the monitor's snapshots carry it
(the one it was opened with, then each `SnapshotReady` the monitor passes on)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from retrain_tui.errors import guarded
from retrain_tui.messages import SnapshotReady
from retrain_tui.monitor_view import Snapshot
from retrain_tui.stats import format_number


def squeeze_summary(analysis: dict | None, state: dict) -> str:
    if not analysis:
        status = state.get("status") or "none"
        error = f": {state['error']}" if state.get("error") else ""
        return (f"squeeze: {status}{error}\nThe variance table appears once "
                "squeeze/analysis.json exists (after the first run finishes).")
    rows = analysis.get("rows") or []
    rec = next((r for r in rows if r.get("recommended")), None)
    worst = f"; worst module at that rank: {rec.get('worst_module')}" if rec else ""
    return (f"adapter {analysis.get('adapter', '?')}  source rank "
            f"{analysis.get('source_rank', '?')}  layers {analysis.get('num_layers', '?')}\n"
            f"recommended rank {analysis.get('recommended_rank', '?')} at threshold "
            f"{analysis.get('threshold', '?')}{worst}")


class SqueezeScreen(Screen):
    DEFAULT_CSS = """
    #squeeze-summary { height: auto; padding: 0 1; }
    #squeeze-table { height: 1fr; }
    """
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("question_mark", "app.help", "Keys", id="help",
                tooltip="Every key of this screen, with what it does"),
        Binding("escape,S", "back", "Back", id="back", tooltip="Return to the monitor"),
        Binding("q", "quit", "Quit", id="quit",
                tooltip="Leave retrain-tui; a campaign keeps running"),
    ]

    def __init__(self, directory: Path, snapshot: Snapshot | None):
        super().__init__()
        self.directory, self.snapshot = Path(directory), snapshot
        self._shown = None  # what the table shows: (analysis, state) as text

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◉")
        yield Static("", id="squeeze-summary", markup=False)
        table = DataTable(id="squeeze-table", cursor_type="row")
        table.add_columns("rank", "mean V(k)", "min", "max", "worst module", "")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.title = "retrain-tui · squeeze"
        self.sub_title = self.directory.name
        self.show()

    @on(SnapshotReady)
    @guarded
    def _snapshot_ready(self, event: SnapshotReady) -> None:
        self.snapshot = event.snapshot
        self.show()

    def show(self) -> None:
        snap = self.snapshot
        analysis = snap.squeeze_analysis if snap else None
        state = snap.squeeze if snap else {}
        key = (repr(analysis), repr(state))
        if key == self._shown:
            return
        self._shown = key
        self.query_one("#squeeze-summary", Static).update(squeeze_summary(analysis, state))
        table = self.query_one("#squeeze-table", DataTable)
        table.clear()
        for row in (analysis or {}).get("rows") or []:
            style = "bold black on green" if row.get("recommended") else ""
            cells = (str(row.get("rank")), format_number(row.get("mean"), 4),
                     format_number(row.get("min"), 4), format_number(row.get("max"), 4),
                     str(row.get("worst_module", "")), "◀ recommended" if row.get("recommended")
                     else "")
            table.add_row(*(Text(c, style=style) for c in cells))

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_quit(self) -> None:
        self.app.exit()
