"""The TUI compare screen (`C` in the monitor): snapshots at 100×30 and 80×24, and keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain_tui.app import RetrainApp
from retrain_tui.screens.compare import CompareScreen, sparkline
from tests.support.campaigns import FIXED_TIME, make_campaign

CONDITIONS = ("grpo+none", "maxrl+none", "maxrl+gtpo_sepa")
SEEDS = (42, 101, 202)


@pytest.fixture
def campaign(tmp_path: Path, monkeypatch) -> Path:
    steps = {f"{c}_s{s}": 30 for c in CONDITIONS for s in SEEDS}
    statuses = {name: "succeeded" for name in steps}
    directory = make_campaign(tmp_path / "logs", conditions=CONDITIONS, seeds=SEEDS, steps=steps,
                              statuses=statuses)
    monkeypatch.chdir(tmp_path)
    return directory.relative_to(tmp_path)


def app_for(target) -> RetrainApp:
    return RetrainApp(target, logs_dir=Path("logs"), clock=lambda: FIXED_TIME + 754,
                      start_watchers=False, strict=True)


async def open_compare(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    pilot.app.screen.refresh_now()
    await pilot.press("C")
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_compare_100x30(campaign, snap_compare) -> None:
    assert snap_compare(app_for(campaign), terminal_size=(100, 30), run_before=open_compare)


def test_compare_80x24(campaign, snap_compare) -> None:
    assert snap_compare(app_for(campaign), terminal_size=(80, 24), run_before=open_compare)


async def test_keys_change_baseline_metric_and_window(campaign) -> None:
    app = app_for(campaign)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_compare(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert screen.comparison.baseline == "grpo+none"
        assert [c.label for c in screen.comparison.conditions] == list(CONDITIONS)
        await pilot.press("b")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.comparison.baseline == "maxrl+none"
        await pilot.press("m", "w")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert (screen.comparison.metric, str(screen.comparison.window)) == ("mean_reward", "last:5")
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([0, 1]) == "▁█"
    assert sparkline([2, 2, 2]) == "▁▁▁"
    line = sparkline([float(i) for i in range(100)], width=10)
    assert len(line) == 10 and line[0] == "▁" and line[-1] == "█"
