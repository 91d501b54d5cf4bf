"""Background reader of a campaign directory.

A `CampaignWatcher` thread polls `state.json`, `manifest.json`, every run's
`metrics.jsonl` (through `retrain_core.tail.JsonlTail`, so each poll reads only the bytes
appended since the last one) and `squeeze/analysis.json`, and turns them into an
immutable `Snapshot`, which it posts in a `messages.SnapshotReady`. The stream is bounded:
at most one message is in flight (posted, and not yet reported `handled()` by the UI); while
one is, the newest snapshot waits here, replacing an older waiting one (whose new failures it
carries on), and it is posted when the UI reports the one in flight handled. However long the
UI thread stalls, the watcher holds one message and one snapshot. The UI thread never touches
the disk or the supervisor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from retrain_core.plan import campaign_parallelism, eta_seconds
from retrain_tui.messages import SnapshotReady
from retrain_tui.monitor_view import (
    KEPT_METRICS,
    TABLE_METRICS,
    ConditionRow,
    History,
    RunRow,
    Snapshot,
)
from retrain_tui.stats import mean_ci95, median


def _finite(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


class _RunTrack:
    """What the watcher remembers of one run: its tail and metric history. The history lists
    are only ever appended to, or replaced by new ones, never changed in place: snapshots
    share them (`monitor_view.History`)."""

    def __init__(self, name: str, run_dir: Path, condition: str, seed: object):
        from retrain_core.tail import JsonlTail

        self.name, self.run_dir, self.condition, self.seed = name, run_dir, condition, seed
        self.tail = JsonlTail(run_dir / "metrics.jsonl")
        self.history: dict[str, list[tuple[int, float]]] = {m: [] for m in KEPT_METRICS}
        self.last: dict = {}
        self.replaced = False

    def read(self) -> list[dict]:
        """New lines; after a replacement of the file, only those of the new file, with the
        history rebuilt from them (`replaced` tells the caller to drop its copies)."""
        lines = self.tail.read_new()
        self.replaced = self.tail.restart_index is not None
        if self.replaced:
            # A resumed trainer rewrote metrics.jsonl up to its checkpoint: the old history
            # (steps past the checkpoint) is gone, not to be followed by the redone steps.
            lines = lines[self.tail.restart_index:]
            self.history = {m: [] for m in KEPT_METRICS}
            self.last = {}
        for line in lines:
            step = line.get("step")
            if not isinstance(step, int):
                continue
            for metric in KEPT_METRICS:
                if metric in line:
                    self.history[metric].append((step, _finite(line[metric])))
            self.last = line
        return lines


class CampaignWatcher:
    """Polls one campaign directory; `poll_once()` is the synchronous core."""

    def __init__(self, directory: str | Path, interval: float = 0.5,
                 post: Callable[[SnapshotReady], object] | None = None,
                 max_plot_points: int = 150):
        self.directory = Path(directory)
        self.interval = interval
        self.post = post  # the monitor's `post_message` (thread-safe)
        self.max_plot_points = max_plot_points
        self.plot_metric = "mean_reward"
        self._post_lock = threading.Lock()
        self._in_flight = False  # a message posted and not yet handled
        self._waiting: Snapshot | None = None  # the newest snapshot while one is in flight
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._tracks: dict[str, _RunTrack] = {}
        self._manifest: dict = {}
        self._statuses: dict[str, str] = {}
        self._version = 0
        self._squeeze_mtime = None
        self._squeeze_analysis = None
        self._plot_acc: dict[str, dict[int, dict[str, float]]] = {}
        self._plot_acc_metric = None

    # -- thread ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="campaign-watcher", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = False) -> None:
        """End the thread; `wait`: until its last poll is published (a poll can take a while:
        the UI does not wait)."""
        self._stop.set()
        self._wake.set()
        if wait and self._thread is not None:
            self._thread.join()

    def poke(self) -> None:
        """Poll now instead of at the next interval (after a command was sent)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            snap = self.poll_once()
            self._publish(snap)
            self._wake.wait(self.interval)
            self._wake.clear()

    def _publish(self, snap: Snapshot) -> None:
        with self._post_lock:
            if self._in_flight:
                waiting = self._waiting
                if waiting is not None and waiting.new_failures:
                    snap = dataclasses.replace(
                        snap, new_failures=waiting.new_failures + snap.new_failures)
                self._waiting = snap
                return
            self._in_flight = self.post is not None
        if self.post is not None:
            self.post(SnapshotReady(snap))

    def handled(self) -> None:
        """The UI has handled the message in flight: post the snapshot waiting, if any."""
        with self._post_lock:
            snap, self._waiting = self._waiting, None
            self._in_flight = snap is not None
        if snap is not None:
            self.post(SnapshotReady(snap))

    # -- reading ----------------------------------------------------------------------------
    def run_history(self, name: str) -> dict[str, list[tuple[int, float]]]:
        with self._lock:
            track = self._tracks.get(name)
            return {k: list(v) for k, v in track.history.items()} if track else {}

    def poll_once(self) -> Snapshot:
        errors: list[str] = []
        api = supervisor_api()

        # A list for a manifest, a run without a name, garbage in state.json: each becomes
        # a message naming the file (shown once), and whatever is usable is still shown.
        from retrain_core.supervisor.validate import read_campaign

        manifest, state, problems = read_campaign(self.directory)
        errors.extend(problems)
        if not self._manifest:
            self._manifest = manifest
        try:
            alive = bool(api.supervisor_alive(self.directory))
        except Exception:  # noqa: BLE001
            alive = False
        with self._lock:
            self._sync_tracks(state)
            for track in self._tracks.values():
                try:
                    lines = track.read()
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{track.name}/metrics.jsonl: {exc}")
                    continue
                self._accumulate_plot(track, lines)
            snap = self._build(state, alive, errors)
        return snap

    def _manifest_runs(self) -> list[dict]:
        runs = self._manifest.get("runs") or []
        if isinstance(runs, dict):
            runs = [dict(v, name=k) for k, v in runs.items()]
        return [r for r in runs if isinstance(r, dict) and r.get("name")]

    def _sync_tracks(self, state: dict) -> None:
        known = {r["name"]: r for r in self._manifest_runs()}
        for name in list(known) + [n for n in (state.get("runs") or {}) if n not in known]:
            if name in self._tracks:
                continue
            spec = known.get(name, {})
            rel = spec.get("dir") or spec.get("directory") or f"runs/{name}"
            condition = spec.get("condition") or spec.get("label") or name.rsplit("_s", 1)[0]
            if isinstance(condition, dict):
                condition = condition.get("label") or name.rsplit("_s", 1)[0]
            self._tracks[name] = _RunTrack(name, self.directory / rel, str(condition),
                                           spec.get("seed", "-"))

    def _accumulate_plot(self, track: _RunTrack, lines: list[dict]) -> None:
        metric = self.plot_metric
        if metric != self._plot_acc_metric:
            # The chosen metric changed: rebuild the per-condition accumulators from history.
            self._plot_acc, self._plot_acc_metric = {}, metric
            for t in self._tracks.values():
                acc = self._plot_acc.setdefault(t.condition, {})
                for step, value in t.history.get(metric, []):
                    acc.setdefault(step, {})[t.name] = value
            return
        acc = self._plot_acc.setdefault(track.condition, {})
        if track.replaced:
            for by_run in acc.values():
                by_run.pop(track.name, None)
            for step in [s for s, by_run in acc.items() if not by_run]:
                del acc[step]
        for line in lines:
            if metric in line and isinstance(line.get("step"), int):
                acc.setdefault(line["step"], {})[track.name] = _finite(line[metric])

    def _plot_series(self) -> dict:
        series = {}
        for condition, by_step in self._plot_acc.items():
            steps = sorted(by_step)
            if len(steps) > self.max_plot_points:
                stride = math.ceil(len(steps) / self.max_plot_points)
                steps = steps[::stride] + ([steps[-1]] if (len(steps) - 1) % stride else [])
            values = []
            for s in steps:
                vals = [v for v in by_step[s].values() if not math.isnan(v)]
                values.append(sum(vals) / len(vals) if vals else math.nan)
            series[condition] = (steps, values)
        return series

    def _squeeze(self) -> dict | None:
        path = self.directory / "squeeze" / "analysis.json"
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        if mtime != self._squeeze_mtime:
            try:
                self._squeeze_analysis = json.loads(path.read_text())
                self._squeeze_mtime = mtime
            except (OSError, ValueError):
                pass  # being written; the next poll retries
        return self._squeeze_analysis

    def _build(self, state: dict, alive: bool, errors: list[str]) -> Snapshot:
        run_states = state.get("runs") or {}
        default_max = int(self._manifest.get("max_steps") or 0)
        rows, failures = [], []
        for name, track in self._tracks.items():
            rs = run_states.get(name) or {}
            status = str(rs.get("status") or "pending")
            if status == "failed" and self._statuses.get(name) not in (None, "failed"):
                failures.append(name)
            self._statuses[name] = status
            last = track.last
            # steps are numbered from 0: the last step logged + 1 is the number done
            step = int(last.get("step", -1)) + 1 if last else 0
            max_steps = int(self._run_max_steps(name) or default_max or 0)
            recent = [v for _, v in track.history["step_time_s"][-10:]]
            step_time = median(recent)
            eta = (max(max_steps - step, 0) * step_time if status in ("running", "pending")
                   and math.isfinite(step_time) else math.nan)
            if not math.isfinite(eta):  # absurd step times (1e308) overflow: no ETA
                eta = math.nan
            rows.append(RunRow(
                name=name, condition=track.condition, seed=track.seed, status=status,
                step=step, max_steps=max_steps, attempt=int(rs.get("attempt") or 0),
                metrics={m: _finite(last.get(m)) for m in TABLE_METRICS} if last else {},
                eta_s=eta, error=str(rs.get("error") or ""), exit_code=rs.get("exit_code"),
                stalled=rs.get("stalled") if status == "running" else None,
                gpus=tuple(g for g in rs.get("gpus") or () if isinstance(g, int)),
                run_dir=track.run_dir, history=History(track.history)))
        self._version += 1
        supervisor = dict(state.get("supervisor") or {})
        return Snapshot(
            version=self._version, directory=self.directory,
            campaign=str(state.get("campaign") or self.directory.name), alive=alive,
            supervisor=supervisor,
            start_time=self._start_time(supervisor),
            runs=rows, conditions=self._conditions(rows), plot_metric=self._plot_acc_metric
            or self.plot_metric, plot_series=self._plot_series(), eta_s=self._campaign_eta(rows),
            squeeze=dict(state.get("squeeze") or {}), squeeze_analysis=self._squeeze(),
            new_failures=failures, errors=errors, made_at=time.monotonic())

    def _start_time(self, supervisor: dict) -> float | None:
        """When the campaign was created (manifest), else when its supervisor started."""
        stamp = self._manifest.get("timestamp")
        if isinstance(stamp, (int, float)) and stamp > 0:
            return float(stamp)
        start = supervisor.get("start_time")
        return float(start) if isinstance(start, (int, float)) else None

    def _run_max_steps(self, name: str) -> int | None:
        for spec in self._manifest_runs():
            if spec["name"] == name:
                return spec.get("max_steps")
        return None

    def _conditions(self, rows: list[RunRow]) -> list[ConditionRow]:
        by_label: dict[str, list[RunRow]] = {}
        for row in rows:
            by_label.setdefault(row.condition, []).append(row)
        out = []
        for label, group in by_label.items():
            started = [r for r in group if r.metrics]
            statuses: dict[str, int] = {}
            for r in group:
                statuses[r.status] = statuses.get(r.status, 0) + 1
            out.append(ConditionRow(
                label=label, seeds=len(group),
                correct=mean_ci95([r.metrics.get("correct_rate") for r in started]),
                reward=mean_ci95([r.metrics.get("mean_reward") for r in started]),
                steps_done=sum(r.step for r in group),
                steps_total=sum(r.max_steps for r in group), statuses=statuses))
        return out

    def _campaign_eta(self, rows: list[RunRow]) -> float:
        left = [r for r in rows if r.status in ("running", "pending")]
        if not left:
            return 0.0 if rows else math.nan
        times = [t for r in rows for _, t in self._tracks[r.name].history["step_time_s"][-10:]]
        width = campaign_parallelism({"parallel": True, **self._manifest}, None,
                                     len(left)).runs_at_once  # the GPU pool bounds it too
        eta = eta_seconds(sum(max(r.max_steps - r.step, 0) for r in left),
                          [t for t in times if not math.isnan(t)], width)
        return math.nan if eta is None or not math.isfinite(eta) else eta


def supervisor_api():
    """`retrain_core.supervisor.api`, or a read-only stand-in when it cannot be imported."""
    try:
        from retrain_core.supervisor import api
    except ImportError:
        return _FileApi
    return api


class _FileApi:
    @staticmethod
    def read_state(directory: Path) -> dict:
        return json.loads((Path(directory) / "state.json").read_text())

    @staticmethod
    def read_manifest(directory: Path) -> dict:
        return json.loads((Path(directory) / "manifest.json").read_text())

    @staticmethod
    def supervisor_alive(directory: Path) -> bool:
        return False
