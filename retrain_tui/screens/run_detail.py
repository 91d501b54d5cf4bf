"""One run in detail: metric plots, the ends of stdout/stderr, latest generations, its
config diff against the campaign's base config, and kill / restart.

What it shows of the run comes in the monitor's snapshots (the one it was opened with, then
each `SnapshotReady` the monitor passes on: status, its directory, its metric history); its
files are read every 2 s in a worker thread. Kill and restart go through the monitor, the
campaign's remote control."""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Log, Static, TabbedContent, TabPane

from retrain_core.tail import read_last_records, tail_lines
from retrain_tui.config_diff import config_diff
from retrain_tui.errors import guarded
from retrain_tui.messages import SnapshotReady
from retrain_tui.monitor_view import Snapshot
from retrain_tui.stats import format_number
from retrain_tui.widgets.metric_plot import MetricPlot

PLOT_GROUPS = (("reward", ("mean_reward", "correct_rate")), ("loss", ("loss", "sepa_lambda")))


def generations_text(records: list[dict]) -> str:
    if not records:
        return "no generations yet (emergence/generations.jsonl)"
    blocks = []
    for r in reversed(records):
        blocks.append(f"step {r.get('step')}  reward {format_number(r.get('reward'))}  "
                      f"tokens {r.get('num_tokens')}\n  prompt: {str(r.get('prompt', ''))[:200]}"
                      f"\n  completion: {str(r.get('completion', ''))[:500]}")
    return "\n\n".join(blocks)


class RunDetailScreen(Screen):
    DEFAULT_CSS = """
    #detail-header { height: 2; padding: 0 1; background: $boost; }
    #detail-tabs { height: 1fr; }
    #detail-plots { height: 1fr; }
    #detail-plots PlotextPlot { width: 1fr; height: 100%; }
    .log-tail { height: 1fr; border: round $foreground 20%; }
    #generations, #config-diff { height: 1fr; }
    """
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("K", "kill", "Kill", id="detail.kill",
                tooltip="SIGTERM this run's process group (asks first)"),
        Binding("R", "restart", "Restart", id="detail.restart",
                tooltip="Restart this run from its last checkpoint (asks first)"),
        Binding("question_mark", "app.help", "Keys", id="help",
                tooltip="Every key of this screen, with what it does"),
        Binding("escape", "back", "Back", id="back", tooltip="Return to the monitor"),
        Binding("q", "quit", "Quit", id="quit",
                tooltip="Leave retrain-tui; a campaign keeps running"),
    ]

    def __init__(self, snapshot: Snapshot, run: str, controls):
        """`controls`: what sends kill and restart to the supervisor (the monitor screen's
        `action_kill(run)` and `action_restart(run)`)."""
        super().__init__()
        self.snapshot, self.run, self.controls = snapshot, run, controls
        self._diff_loaded = False
        self._log_lines: dict[str, list[str]] = {}  # what each log widget shows

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◉")
        yield Static("", id="detail-header", markup=False)
        with TabbedContent(id="detail-tabs"):
            with TabPane("Metrics", id="tab-metrics"), Horizontal(id="detail-plots"):
                for name, _ in PLOT_GROUPS:
                    yield MetricPlot(id=f"plot-{name}")
            with TabPane("Logs", id="tab-logs"):
                yield Log(id="stdout-tail", classes="log-tail", max_lines=200)
                yield Log(id="stderr-tail", classes="log-tail", max_lines=200)
            with TabPane("Generations", id="tab-generations"), VerticalScroll(id="generations"):
                yield Static("", id="generations-text", markup=False)
            with TabPane("Config diff", id="tab-diff"):
                table = DataTable(id="config-diff", cursor_type="row", zebra_stripes=True)
                table.add_columns("key", "base", "this run")
                yield table
        yield Footer()

    def on_mount(self) -> None:
        self.title = "retrain-tui · run"
        self.sub_title = self.run
        self.query_one("#stdout-tail", Log).border_title = "stdout (end)"
        self.query_one("#stderr-tail", Log).border_title = "stderr (end)"
        self.reload()
        if self.app.start_watchers:
            self.set_interval(2.0, self.reload)

    @on(SnapshotReady)
    @guarded
    def _snapshot_ready(self, event: SnapshotReady) -> None:
        was_finished = self.snapshot.finished
        self.snapshot = event.snapshot
        if self.snapshot.finished != was_finished:
            self.refresh_bindings()
        self._show_header()

    @work(thread=True, exclusive=True, group="detail")
    def reload(self) -> None:
        snap = self.snapshot
        row = snap.run(self.run)
        run_dir = (row.run_dir if row and row.run_dir else snap.directory / "runs" / self.run)
        plotted = [m for _, metrics in PLOT_GROUPS for m in metrics]
        history = {m: row.history.points(m) for m in plotted} if row and row.history else {}
        stdout = tail_lines(run_dir / "stdout.log", 100)
        stderr = tail_lines(run_dir / "stderr.log", 100)
        gens = read_last_records(run_dir / "emergence" / "generations.jsonl", 5, 256 * 1024)
        diff, diff_error = None, ""
        if not self._diff_loaded:
            try:
                diff = config_diff(snap.directory, run_dir)
            except Exception as exc:  # noqa: BLE001 - no config.toml yet, or no campaign.toml
                diff_error = f"{type(exc).__name__}: {exc}"
        self.app.call_from_thread(self._apply, history, stdout, stderr, gens, diff, diff_error)

    def _show_header(self) -> None:
        row = self.snapshot.run(self.run)
        if row:
            error = f"  error: {row.error}" if row.error else ""
            self.query_one("#detail-header", Static).update(
                f"{row.name}  [{row.status}]  step {row.step}/{row.max_steps}  attempt "
                f"{row.attempt}  exit {row.exit_code if row.exit_code is not None else '-'}"
                f"{error}\ncondition {row.condition}  seed {row.seed}")

    def _apply(self, history, stdout, stderr, gens, diff, diff_error) -> None:
        if not self.is_attached:
            return
        self._show_header()
        for name, metrics in PLOT_GROUPS:
            series = {m: tuple(zip(*history.get(m, []))) or ((), ()) for m in metrics}
            series = {m: (list(s[0]), list(s[1])) for m, s in series.items()}
            self.query_one(f"#plot-{name}", MetricPlot).show(name, series, " / ".join(metrics))
        for widget_id, lines in (("#stdout-tail", stdout), ("#stderr-tail", stderr)):
            if self._log_lines.get(widget_id) != lines:
                log = self.query_one(widget_id, Log)
                log.clear()
                log.write_lines(lines or ["(empty)"])
                self._log_lines[widget_id] = lines
        self.query_one("#generations-text", Static).update(generations_text(gens))
        if diff is not None or diff_error:
            table = self.query_one("#config-diff", DataTable)
            table.clear()
            if diff_error:
                table.add_row("(unavailable)", diff_error, "")
            else:
                self._diff_loaded = True
                for row in diff or [("(no differences)", "", "")]:
                    table.add_row(*row)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # a finished campaign: nothing to kill or restart
        return not (action in ("kill", "restart") and self.snapshot.finished)

    def action_kill(self) -> None:
        self.controls.action_kill(self.run)

    def action_restart(self) -> None:
        self.controls.action_restart(self.run)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_quit(self) -> None:
        self.app.exit()
