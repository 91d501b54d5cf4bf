"""TUI alerts: a real monitor (Pilot) on a fabricated campaign whose state.json changes the
way the supervisor changes it; each change of note is a toast and rings the bell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrain_tui.app import RetrainApp
from retrain_tui.widgets.runs_table import RunsTable
from tests.support.campaigns import FIXED_TIME, make_campaign, mark_supervisor_alive, write_json

A, B = "grpo+none_s42", "maxrl+gtpo_sepa_s42"


def set_runs(directory: Path, **changes: dict) -> None:
    state = json.loads((directory / "state.json").read_text())
    for run, fields in changes.items():
        state["runs"][run.replace("__", "+")].update(fields)
    write_json(directory / "state.json", state)


def toasts(app) -> list[tuple[str, str]]:
    return [(n.title, n.message) for n in app._notifications]


async def test_stall_finish_failure_and_campaign_end_alert(tmp_path: Path, monkeypatch) -> None:
    directory = make_campaign(tmp_path / "logs", seeds=(42,), steps={A: 5, B: 3},
                              statuses={A: "running", B: "running"})
    mark_supervisor_alive(directory)
    monkeypatch.chdir(tmp_path)
    app = RetrainApp(directory, logs_dir=Path("logs"), clock=lambda: FIXED_TIME + 60,
                     start_watchers=False, strict=True)
    bells: list[int] = []
    monkeypatch.setattr(app, "bell", lambda: bells.append(1))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        screen.refresh_now()
        await pilot.pause()
        assert toasts(app) == [] and bells == []  # the first look is the baseline

        set_runs(directory, **{A.replace("+", "__"): {"stalled": {"since": FIXED_TIME, "idle_s": 412.0,
                                                                  "bound_s": 300.0}}})
        screen.refresh_now()
        await pilot.pause()
        assert ("Run stalled", f"{A}: no new metrics for 412 s (bound 300 s)") in toasts(app)
        assert len(bells) == 1
        table = screen.query_one(RunsTable)
        cells = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert sum("stalled" in row for row in cells) == 1 and sum("running" in row for row in cells) == 1

        screen.refresh_now()  # nothing new: no second toast, no second bell
        await pilot.pause()
        assert len(bells) == 1

        set_runs(directory, **{A.replace("+", "__"): {"status": "succeeded", "stalled": None},
                               B.replace("+", "__"): {"status": "failed", "error": "exit code 3"}})
        screen.refresh_now()
        await pilot.pause()
        titles = [t for t, _ in toasts(app)]
        assert {"Run finished", "Run failed", "Campaign ended"} <= set(titles)
        assert ("Campaign ended", f"{directory.name}: 1 failed, 1 succeeded") in toasts(app)
        assert len(bells) == 2


CONDITIONS = ("grpo+none", "maxrl+none", "maxrl+gtpo", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa")


def screen_text(app) -> str:
    """The screen as plain text rows (from Textual's SVG export)."""
    import html
    import re

    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text[^>]*x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', app.export_screenshot()):
        rows.setdefault(float(m.group(2)), []).append((float(m.group(1)), html.unescape(m.group(3))))
    return "\n".join("".join(t for _, t in sorted(r)).replace("\xa0", " ") for _, r in sorted(rows.items()))


@pytest.fixture
def five_by_two(tmp_path: Path, monkeypatch) -> Path:
    runs = [f"{c}_s{s}" for c in CONDITIONS for s in (42, 101)]
    statuses = {r: "succeeded" for r in runs[:4]} | {r: "running" for r in runs[4:8]}
    directory = make_campaign(tmp_path / "logs", conditions=CONDITIONS, seeds=(42, 101),
                              steps={r: 12 for r in runs}, statuses=statuses)
    mark_supervisor_alive(directory)
    set_runs(directory, maxrl__gtpo_hicra_s42={"stalled": {"since": FIXED_TIME, "idle_s": 400.0,
                                                               "bound_s": 300.0}})
    monkeypatch.chdir(tmp_path)
    return directory.relative_to(tmp_path)


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    pilot.app.screen.refresh_now()
    await pilot.pause()


def monitor_app(directory: Path) -> RetrainApp:
    return RetrainApp(directory, logs_dir=Path("logs"), clock=lambda: FIXED_TIME + 754,
                      start_watchers=False, strict=True)


def test_monitor_80x24_with_a_stalled_run(five_by_two, snap_compare) -> None:
    assert snap_compare(monitor_app(five_by_two), terminal_size=(80, 24), run_before=settle)


async def test_monitor_80x24_shows_whole_names_and_statuses(five_by_two) -> None:
    app = monitor_app(five_by_two)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        for name in ("grpo+none_s101", "maxrl+gtpo_hicra_s101", "maxrl+gtpo_sepa_s101"):
            assert name in text  # not cut to three letters
        for status in ("succeeded", "running", "stalled", "pending"):
            assert status in text  # not cut to six
