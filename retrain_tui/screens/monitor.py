"""The monitor: a live view of one campaign directory and the remote control for its runs.

A `CampaignWatcher` thread reads the directory and posts each new state to this screen in a
`SnapshotReady` message (bounded: at most one unhandled, the newest kept); the screen
applies it and passes a copy to the screens opened above it (run detail, squeeze). Commands (kill, restart, pause) go to the supervisor through
`retrain_core.supervisor.api.send` in a worker thread. Quitting sends nothing: the
campaign keeps running.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from retrain_tui.alerts import Alerts
from retrain_tui.dialogs.confirm import ConfirmDialog
from retrain_tui.errors import guarded
from retrain_tui.messages import SnapshotReady
from retrain_tui.monitor_view import PLOT_METRICS, Snapshot
from retrain_tui.watcher import CampaignWatcher
from retrain_tui.widgets.campaign_header import CampaignHeader
from retrain_tui.widgets.condition_table import ConditionTable
from retrain_tui.widgets.metric_plot import MetricPlot
from retrain_tui.widgets.runs_table import SORT_KEYS, RunsTable

STATUS_FILTERS = (None, "running", "pending", "succeeded", "failed", "killed")


class MonitorScreen(Screen):
    DEFAULT_CSS = """
    #campaign-header { height: 2; padding: 0 1; background: $boost; }
    #monitor-filters { height: 1; padding: 0 1; color: $text-muted; }
    #runs-table { height: 1fr; min-height: 6; }
    #monitor-bottom { height: 1fr; min-height: 8; }
    #condition-agg {
        width: 1fr;
        min-width: 62;  /* the whole table, up to a two-status runs summary, at 100 columns */
        height: 100%;
    }
    #reward-plot { width: 1fr; height: 100%; }
    """
    AUTO_FOCUS = "#runs-table"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("enter", "detail", "Detail", id="detail",
                tooltip="Plots, logs, generations and config diff of the selected run"),
        Binding("K", "kill", "Kill", id="kill",
                tooltip="SIGTERM the selected run's process group (asks first)"),
        Binding("R", "restart", "Restart", id="restart",
                tooltip="Restart the selected run from its last checkpoint (asks first)"),
        Binding("P", "pause", "Pause/resume", id="pause",
                tooltip="Stop or resume starting new runs (running ones go on)"),
        Binding("S", "squeeze", "Squeeze", id="squeeze",
                tooltip="LoRA-Squeeze variance table and recommended rank"),
        Binding("G", "resources", "Resources", id="resources", show=False,
                tooltip="Host, GPU and per-run CPU/memory/GPU memory"),
        Binding("C", "compare", "Compare", id="compare",
                tooltip="Paired differences vs a baseline condition across seeds"),
        Binding("f", "cycle_status", "Filter status", id="filter_status", show=False,
                tooltip="Show runs of one status, then the next; all again at the end"),
        Binding("c", "cycle_condition", "Filter condition", id="filter_condition", show=False,
                tooltip="Show runs of one condition, then the next"),
        Binding("o", "cycle_sort", "Sort", id="sort", show=False,
                tooltip="Sort the runs by the next column"),
        Binding("O", "reverse_sort", "Reverse sort", id="reverse_sort", show=False,
                tooltip="Reverse the order of the runs"),
        Binding("m", "cycle_metric", "Plot metric", id="plot_metric", show=False,
                tooltip="Plot the next metric"),
        Binding("question_mark", "app.help", "Keys", id="help",
                tooltip="Every key of this screen, with what it does"),
        Binding("escape", "back", "Back", id="back", show=False,
                tooltip="Return to the previous screen"),
        Binding("q", "quit", "Quit", id="quit",
                tooltip="Leave retrain-tui; the campaign keeps running"),
    ]

    def __init__(self, directory: Path, launched: bool = False):
        super().__init__()
        self.directory = Path(directory)
        # Just launched: the detached supervisor needs a moment to write its pid file.
        self._grace_until = time.monotonic() + (20.0 if launched else 0.0)
        self.snapshot: Snapshot | None = None
        self.watcher: CampaignWatcher | None = None
        self.sort, self.reverse = "run", False
        self.status_filter: str | None = None
        self.condition_filter: str | None = None
        self.update_latencies: list[float] = []  # seconds, snapshot made → frame refreshed
        self._seen_errors: set[str] = set()
        self._resume_offered = False
        self.alerts = Alerts()  # toasts + bell: stalls, finished runs, the campaign's end

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◉")
        yield CampaignHeader("loading…", id="campaign-header")
        yield Static("", id="monitor-filters")
        yield RunsTable(id="runs-table")
        with Horizontal(id="monitor-bottom"):
            yield ConditionTable(id="condition-agg")
            yield MetricPlot(id="reward-plot")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "retrain-tui · monitor"
        self.sub_title = self.directory.name
        self.watcher = CampaignWatcher(self.directory, interval=self.app.poll_interval,
                                       post=self.post_message)
        self._show_filters()
        if self.app.start_watchers:
            self.watcher.start()

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    # -- snapshots --------------------------------------------------------------------------
    @on(SnapshotReady)
    def _snapshot_ready(self, event: SnapshotReady) -> None:
        try:
            self.apply_snapshot(event.snapshot)
        finally:
            self.watcher.handled()  # only now may the watcher post the next one

    def refresh_now(self) -> Snapshot:
        """Poll synchronously and apply (tests and snapshots: no timing involved)."""
        snap = self.watcher.poll_once()
        self.apply_snapshot(snap)
        return snap

    @guarded
    def apply_snapshot(self, snap: Snapshot) -> None:
        was_finished = self.finished
        self.snapshot = snap
        if self.finished != was_finished:
            self.refresh_bindings()
        self._pass_on(snap)
        self.query_one(CampaignHeader).show(snap, self.app.clock())
        self._show_runs()
        self.query_one(ConditionTable).show(snap.conditions)
        self.query_one(MetricPlot).show(snap.plot_metric, snap.plot_series)
        for name in snap.new_failures:
            row = snap.run(name)
            detail = f": {row.error}" if row and row.error else ""
            self.app.notify(f"run {name} failed{detail}", severity="error", title="Run failed",
                            timeout=15)
        alerts = self.alerts.update(snap)
        for alert in alerts:
            self.app.notify(alert.message, title=alert.title, severity=alert.severity, timeout=15)
        if alerts or snap.new_failures:
            self.app.bell()
        for error in snap.errors:
            if error not in self._seen_errors:
                self._seen_errors.add(error)
                self.app.notify(error, severity="warning", title="Reading campaign")
        unfinished = any(r.status in ("pending", "running") for r in snap.runs)
        if (not snap.alive and unfinished and not self._resume_offered
                and time.monotonic() > self._grace_until):
            self._resume_offered = True
            self.app.push_screen(ConfirmDialog(
                "The supervisor is not running",
                f"{snap.campaign} has unfinished runs and is shown read-only.\nStart a new "
                "supervisor that adopts them?", yes="Resume", no="Read-only"), self._resume)
        made = snap.made_at
        self.call_after_refresh(lambda: self.update_latencies.append(time.monotonic() - made))

    def _pass_on(self, snap: Snapshot) -> None:
        """The screens opened from this one show what the snapshots say: each gets its own
        copy of the message (a screen without a handler for it ignores it)."""
        stack = self.app.screen_stack
        if self in stack:
            for screen in stack[stack.index(self) + 1:]:
                screen.post_message(SnapshotReady(snap))

    def _show_runs(self) -> None:
        if self.snapshot is not None:
            self.query_one(RunsTable).show(self.snapshot.runs, self.sort, self.reverse,
                                           self.status_filter, self.condition_filter)
        self._show_filters()

    def _show_filters(self) -> None:
        metric = self.watcher.plot_metric if self.watcher else "mean_reward"
        self.query_one("#monitor-filters", Static).update(
            f"status: {self.status_filter or 'all'} (f)  condition: "
            f"{self.condition_filter or 'all'} (c)  sort: {self.sort}"
            f"{' ↓' if self.reverse else ''} (o/O)  plot: {metric} (m)")

    # -- selection and navigation -----------------------------------------------------------
    @property
    def selected_run(self) -> str | None:
        return self.query_one(RunsTable).selected_run

    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_detail()

    @on(DataTable.HeaderSelected, "#runs-table")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key in SORT_KEYS:
            self.reverse = not self.reverse if self.sort == key else False
            self.sort = key
            self._show_runs()

    @guarded
    def action_detail(self) -> None:
        from retrain_tui.screens.run_detail import RunDetailScreen

        if self.selected_run and self.snapshot is not None:
            self.app.push_screen(RunDetailScreen(self.snapshot, self.selected_run, controls=self))

    @guarded
    def action_squeeze(self) -> None:
        from retrain_tui.screens.squeeze import SqueezeScreen

        self.app.push_screen(SqueezeScreen(self.directory, self.snapshot))

    @guarded
    def action_resources(self) -> None:
        from retrain_tui.screens.resources import ResourcesScreen

        self.app.push_screen(ResourcesScreen(self.directory))

    @guarded
    def action_compare(self) -> None:
        from retrain_tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(self.directory))

    def action_cycle_status(self) -> None:
        i = STATUS_FILTERS.index(self.status_filter)
        self.status_filter = STATUS_FILTERS[(i + 1) % len(STATUS_FILTERS)]
        self._show_runs()

    @guarded
    def action_cycle_condition(self) -> None:
        labels = [None] + [c.label for c in (self.snapshot.conditions if self.snapshot else [])]
        i = labels.index(self.condition_filter) if self.condition_filter in labels else 0
        self.condition_filter = labels[(i + 1) % len(labels)]
        self._show_runs()

    def action_cycle_sort(self) -> None:
        self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        self._show_runs()

    def action_reverse_sort(self) -> None:
        self.reverse = not self.reverse
        self._show_runs()

    @guarded
    def action_cycle_metric(self) -> None:
        metric = self.watcher.plot_metric
        self.watcher.plot_metric = PLOT_METRICS[(PLOT_METRICS.index(metric) + 1)
                                                % len(PLOT_METRICS)]
        self._show_filters()
        self.watcher.poke()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def action_quit(self) -> None:
        self.app.exit()  # the campaign keeps running: nothing is sent to the supervisor

    # -- remote control ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """No supervisor and no run left to go: nothing to kill, restart or pause."""
        return self.snapshot is not None and self.snapshot.finished

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # a finished campaign: hidden from the footer, the help and the palette
        return not (action in ("kill", "restart", "pause") and self.finished)

    def _require_supervisor(self) -> bool:
        if self.snapshot is None or not self.snapshot.alive:
            self.app.notify("the supervisor is not running (read-only); resume the campaign "
                            "first", severity="warning")
            return False
        return True

    @guarded
    def action_kill(self, run: str | None = None) -> None:
        run = run or self.selected_run
        row = self.snapshot.run(run) if self.snapshot and run else None
        if row and row.status not in ("running", "pending"):
            self.app.notify(f"{run} has already ended ({row.status})", severity="warning")
            return
        if run and self._require_supervisor():
            self.app.push_screen(
                ConfirmDialog(f"Kill {run}?", "Its process group gets SIGTERM; the other runs "
                              "continue.", yes="Kill", danger=True),
                lambda yes: yes and self.send("kill", run))

    @guarded
    def action_restart(self, run: str | None = None) -> None:
        run = run or self.selected_run
        if run and self._require_supervisor():
            self.app.push_screen(
                ConfirmDialog(f"Restart {run}?", "It is stopped if running and started again "
                              "from its last checkpoint.", yes="Restart", danger=True),
                lambda yes: yes and self.send("restart", run))

    @guarded
    def action_pause(self) -> None:
        if self._require_supervisor():
            self.send("unpause" if self.snapshot.paused else "pause")

    @work(thread=True, group="commands")
    def send(self, command: str, run: str | None = None) -> None:
        from retrain_core.supervisor import api

        try:
            api.send(self.directory, command, run)
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self.app.notify, f"{command} failed: {exc}",
                                      severity="error")
            return
        self.app.call_from_thread(self.app.notify, f"sent {command}" + (f" {run}" if run else ""))
        self.watcher.poke()

    def _resume(self, yes: bool | None) -> None:
        if yes:
            self.resume()

    @work(thread=True, group="commands")
    def resume(self, retry_failed: bool = False) -> None:
        from retrain_core.supervisor import api

        try:
            # killed runs (and failed ones when asked) are queued again: see supervisor/rebuild.py
            api.resume(self.directory, retry_failed=retry_failed)
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self.app.notify, f"resume failed: {exc}", severity="error")
            return
        self.app.call_from_thread(self.app.notify, "supervisor resumed")
        self.watcher.poke()

    def extra_commands(self):
        """Palette commands without a key (the keys' actions are listed from BINDINGS)."""
        if self.snapshot is not None and not self.snapshot.alive and not self.finished:
            yield ("Resume supervisor", "Start a supervisor that adopts the unfinished runs",
                   self.resume)
        snap = self.snapshot
        if snap is not None and self.finished:  # a stopped or ended campaign can go on
            if any(r.status == "killed" for r in snap.runs):
                yield ("Continue killed runs",
                       "Start a supervisor that continues them from their checkpoints", self.resume)
            if any(r.status == "failed" for r in snap.runs):
                yield ("Retry failed runs", "Run the failed and killed runs again",
                       lambda: self.resume(retry_failed=True))
