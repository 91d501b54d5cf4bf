"""The TUI driving a real supervisor and real trainer subprocesses on the tiny-model demo:
launch from the editor, kill one run with confirmation, quit (the campaign keeps going),
re-attach and see the same state, and the tmux smoke script."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from waits import wait_for

from retrain_tui.app import RetrainApp
from retrain_tui.screens.monitor import MonitorScreen

REPO = Path(__file__).resolve().parent.parent
SIZE = (100, 30)
VICTIM, SURVIVOR = "maxrl+gtpo_s42", "grpo+none_s42"
TERMINAL = ("succeeded", "failed", "killed")

pytestmark = pytest.mark.slow


def small_demo(path: Path, max_steps: int = 6) -> Path:
    """configs/demo.toml cut to 2 conditions × 1 seed, a few steps, no stagger, no squeeze."""
    text = (REPO / "configs" / "demo.toml").read_text()
    text = text.replace("seeds = [42, 101]", "seeds = [42]")
    text = re.sub(r"max_steps = \d+", f"max_steps = {max_steps}", text, count=1)
    text = text.replace("stagger_seconds = 2.0", "stagger_seconds = 0.0")
    text = re.sub(r"conditions = \[.*?\n\]", 'conditions = [\n'
                  '  { advantage_mode = "grpo", transform_mode = "none" },\n'
                  '  { advantage_mode = "maxrl", transform_mode = "gtpo" },\n]', text,
                  flags=re.DOTALL)
    text = text.replace("[squeeze]\nmin_variance_retention = 0.95\n", "")
    path.write_text(text)
    return path


def needs_trainer() -> None:
    """The trainer ships with the package: a missing one fails the test, never skips it."""
    import retrain_core.train.cli  # noqa: F401


def wait_terminal(directory: Path, timeout: float = 240) -> dict:
    from retrain_core.supervisor import api

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.read_state(directory).get("runs", {})
        if runs and all(r["status"] in TERMINAL for r in runs.values()):
            return runs
        time.sleep(0.5)
    raise AssertionError(f"campaign did not finish: {api.read_state(directory).get('runs')}")


def stop_campaign(directory: Path | None) -> None:
    from retrain_core.supervisor import api

    if directory is None or not api.supervisor_alive(directory):
        return
    api.send(directory, "stop")
    deadline = time.monotonic() + 30
    while api.supervisor_alive(directory) and time.monotonic() < deadline:
        time.sleep(0.2)


def status_of(screen: MonitorScreen, run: str) -> str | None:
    snap = screen.snapshot
    row = snap.run(run) if snap else None
    return row.status if row else None


async def test_launch_kill_quit_reattach(tmp_path: Path, tiny_model_dir: Path) -> None:
    needs_trainer()
    from retrain_core.supervisor import api

    config = small_demo(tmp_path / "demo.toml")
    app = RetrainApp(config, logs_dir=tmp_path / "logs", strict=True, poll_interval=0.2)
    directory = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            app.screen.query_one("#condition-table").focus()
            await pilot.press("L")
            await wait_for(pilot, lambda: "Confirm" in type(app.screen).__name__, 5)
            await pilot.press("y")
            await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen), 30)
            monitor = app.screen
            directory = monitor.directory
            assert directory.parent == tmp_path / "logs"
            await wait_for(pilot, lambda: monitor.snapshot is not None
                           and monitor.snapshot.alive, 30)
            # kill one run, with confirmation
            await wait_for(pilot, lambda: status_of(monitor, VICTIM) == "running", 120)
            table = monitor.query_one("#runs-table")
            table.focus()
            table.move_cursor(row=table.get_row_index(VICTIM))
            await pilot.press("K")
            await wait_for(pilot, lambda: "Confirm" in type(app.screen).__name__, 5)
            await pilot.press("y")
            await wait_for(pilot, lambda: status_of(monitor, VICTIM) == "killed", 60)
            # rows follow the real metrics.jsonl of the other run
            await wait_for(pilot, lambda: monitor.snapshot.run(SURVIVOR).step >= 1, 300)
            assert "/6" in str(table.get_cell(SURVIVOR, "progress"))
            await pilot.press("q")
        assert app.return_code == 0
        state = api.read_state(directory)
        unfinished = state["runs"][SURVIVOR]["status"] not in TERMINAL
        if unfinished:  # quitting the app did not stop the campaign
            assert api.supervisor_alive(directory)
        assert not state["supervisor"].get("stopping")
        assert not list((directory / "control").glob("*stop*"))

        # re-attach: the same runs, the kill remembered
        app2 = RetrainApp(directory, strict=True, start_watchers=False)
        async with app2.run_test(size=SIZE) as pilot:
            snap = app2.screen.refresh_now()
            await pilot.pause()
            if not isinstance(app2.screen, MonitorScreen):
                await pilot.press("n")  # the supervisor ended meanwhile: stay read-only
            assert snap.run(VICTIM).status == "killed"
            assert {r.name for r in snap.runs} == {VICTIM, SURVIVOR}
            assert snap.run(SURVIVOR).step >= 1
            await pilot.press("q")
        runs = wait_terminal(directory)
        assert runs[VICTIM]["status"] == "killed"
        assert runs[SURVIVOR]["status"] == "succeeded"
    finally:
        stop_campaign(directory)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_smoke(tmp_path: Path, tiny_model_dir: Path) -> None:
    needs_trainer()
    script = REPO / "tests" / "tui_smoke_tmux.sh"
    small_demo(tmp_path / "demo.toml", max_steps=20)
    result = subprocess.run(["bash", str(script), str(tmp_path)], check=False, capture_output=True,
                            text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "SMOKE OK" in result.stdout
