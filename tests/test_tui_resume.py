"""Issue #6, the resume path: `retrain-tui logs/campaign_…` on a campaign whose supervisor
died attaches read-only and offers to resume it. A real campaign on the tiny model: its
supervisor is SIGKILLed, the app's offer starts a new one; that one is SIGKILLed too and
the command palette's "Resume supervisor" starts a third; every run still succeeds."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import test_tui_live as live
from test_sup_helpers import procs  # noqa: F401  (fixture: kills leftovers at teardown)
from waits import palette_offers

from retrain_tui.app import RetrainApp
from retrain_tui.dialogs.confirm import ConfirmDialog
from retrain_tui.screens.monitor import MonitorScreen

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("procs")]


def kill_supervisor(directory: Path) -> int:
    """SIGKILL the campaign's supervisor (no clean shutdown: its runs are orphaned) once it
    is sure the pid is that supervisor, not a reused pid; wait until it is gone."""
    from retrain_core.supervisor import api

    pid = api.read_state(directory)["supervisor"]["pid"]
    proc = psutil.Process(pid)
    assert "retrain_core.supervisor.daemon" in " ".join(proc.cmdline())
    assert str(directory.resolve()) in proc.cmdline()
    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)  # not our child (detached), psutil polls until it is gone
    assert not api.supervisor_alive(directory)
    return pid


def unfinished(directory: Path) -> bool:
    from retrain_core.supervisor import api

    runs = api.read_state(directory)["runs"].values()
    return any(r["status"] not in live.TERMINAL for r in runs)


async def wait_new_supervisor(pilot, directory: Path, old_pid: int) -> int:
    """Wait (letting the app run) for a live supervisor other than `old_pid`."""
    from retrain_core.supervisor import api

    def current() -> int | None:
        pid = api.read_state(directory).get("supervisor", {}).get("pid")
        return pid if pid != old_pid and api.supervisor_alive(directory) else None

    await live.wait_for(pilot, lambda: current() is not None, 20)
    return current()


@pytest.mark.timeout(600)
async def test_resume_offer_and_palette_after_supervisor_killed(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    live.needs_trainer()
    from retrain_core.supervisor import api

    # Long enough that the runs outlive two supervisor deaths and resumes on a loaded box
    # (about 40 s of training idle); the test never waits for more than that.
    config = live.small_demo(tmp_path / "demo.toml", max_steps=24)
    directory = api.launch(config, tmp_path / "logs")
    try:
        assert api.wait_started(directory, 20)
        # kill it mid-campaign: one run running (to adopt), none finished
        deadline = time.monotonic() + 60
        while not any(r["status"] == "running"
                      for r in api.read_state(directory).get("runs", {}).values()):
            assert time.monotonic() < deadline, "no run started"
            await asyncio.sleep(0.1)
        first = kill_supervisor(directory)

        app = RetrainApp(directory, strict=True, poll_interval=0.2)
        async with app.run_test(size=live.SIZE) as pilot:
            await live.wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), 10)
            monitor = app.screen_stack[-2]
            assert isinstance(monitor, MonitorScreen)
            assert not monitor.snapshot.alive  # read-only until the answer
            await pilot.press("y")  # "Resume"
            await live.wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen), 5)
            second = await wait_new_supervisor(pilot, directory, first)
            await live.wait_for(pilot, lambda: monitor.snapshot.alive, 10)

            # the offer is made once; after the next death the palette resumes it
            assert unfinished(directory), "the runs ended before the palette could be tried"
            kill_supervisor(directory)
            await live.wait_for(pilot, lambda: not monitor.snapshot.alive, 10)
            assert isinstance(app.screen, MonitorScreen)  # no second offer
            await palette_offers(pilot, "Resume supervisor")
            await pilot.press("enter")
            await wait_new_supervisor(pilot, directory, second)
            await live.wait_for(pilot, lambda: monitor.snapshot.alive, 10)
            await pilot.press("q")
        assert app.return_code == 0
        runs = live.wait_terminal(directory, timeout=400)
        assert {n: r["status"] for n, r in runs.items()} == {
            live.VICTIM: "succeeded", live.SURVIVOR: "succeeded"}
        # the orphaned runs were adopted, not started again
        assert {r.get("attempt") for r in runs.values()} == {1}
    finally:
        live.stop_campaign(directory)
