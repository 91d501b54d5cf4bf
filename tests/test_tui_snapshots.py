"""SVG snapshot tests (pytest-textual-snapshot) of every screen at 100×30 and the editor
at 80×24. Deterministic: fabricated campaign data, a frozen clock, file names only (no
tmp paths) in the rendered output. Update with `pytest --snapshot-update`."""

from __future__ import annotations

from pathlib import Path

import pytest
from waits import edit_field, wait_for

from retrain_tui.app import RetrainApp
from tests.support.campaigns import FIXED_TIME, demo_workdir

STATUSES = {"grpo+none_s42": "running", "grpo+none_s101": "succeeded",
            "maxrl+gtpo_sepa_s42": "failed", "maxrl+gtpo_sepa_s101": "running"}
STEPS = {"grpo+none_s42": 14, "grpo+none_s101": 30, "maxrl+gtpo_sepa_s42": 9,
         "maxrl+gtpo_sepa_s101": 21}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    """A cwd with configs/demo.toml and logs/ holding one live fabricated campaign."""
    demo_workdir(tmp_path, steps=STEPS, statuses=STATUSES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def app_for(target) -> RetrainApp:
    return RetrainApp(target, logs_dir=Path("logs"), clock=lambda: FIXED_TIME + 754,
                      start_watchers=False)


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    screen = pilot.app.screen
    if hasattr(screen, "refresh_now"):
        screen.refresh_now()
    await pilot.app.workers.wait_for_complete()
    await pilot.wait_for_scheduled_animations()  # e.g. a tab's underline sliding over
    await pilot.pause()


def campaign_dir() -> Path:
    return next(Path("logs").glob("campaign_*"))


async def settle_on_cpu(pilot) -> None:
    """The CPU preset chosen: "auto" would show whatever this machine detects."""
    pilot.app.screen.query_one("#plan-gpu").value = "cpu"
    await settle(pilot)


def test_editor_100x30(workdir, snap_compare) -> None:
    assert snap_compare(app_for(Path("configs/demo.toml")), terminal_size=(100, 30),
                        run_before=settle_on_cpu)


def test_editor_80x24(workdir, snap_compare) -> None:
    assert snap_compare(app_for(Path("configs/demo.toml")), terminal_size=(80, 24),
                        run_before=settle_on_cpu)


def test_editor_base_toml_with_problem_100x30(workdir, snap_compare) -> None:
    # highlighted TOML needs tree-sitter's grammar; without it the editor is plain text
    pytest.importorskip("tree_sitter_toml")

    async def run_before(pilot) -> None:
        await settle(pilot)
        screen = pilot.app.screen
        await edit_field(pilot, "max_steps", "ten")
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: screen.query_one("#editor-tabs").active == "tab-base", 30,
                       what="the Base TOML tab")
        await settle(pilot)

    assert snap_compare(app_for(Path("configs/demo.toml")), terminal_size=(100, 30),
                        run_before=run_before)


def test_monitor_100x30(workdir, snap_compare) -> None:
    assert snap_compare(app_for(campaign_dir()), terminal_size=(100, 30), run_before=settle)


def test_run_detail_100x30(workdir, snap_compare) -> None:
    async def run_before(pilot) -> None:
        await settle(pilot)
        pilot.app.screen.query_one("#runs-table").focus()
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(app_for(campaign_dir()), terminal_size=(100, 30), run_before=run_before)


def test_squeeze_100x30(workdir, snap_compare) -> None:
    assert snap_compare(app_for(campaign_dir()), terminal_size=(100, 30), run_before=settle,
                        press=["S"])


def test_kill_confirm_100x30(workdir, snap_compare) -> None:
    async def run_before(pilot) -> None:
        await settle(pilot)
        table = pilot.app.screen.query_one("#runs-table")
        table.focus()
        table.move_cursor(row=1)  # grpo+none_s42, running
        await pilot.press("K")
        await pilot.pause()

    assert snap_compare(app_for(campaign_dir()), terminal_size=(100, 30), run_before=run_before)


def test_help_100x30(workdir, snap_compare) -> None:
    assert snap_compare(app_for(campaign_dir()), terminal_size=(100, 30), run_before=settle,
                        press=["question_mark"])


def test_picker_100x30(workdir, snap_compare) -> None:
    assert snap_compare(app_for(None), terminal_size=(100, 30), run_before=settle)
