"""Issue #11 item 1 in the TUI: a stopped campaign (every run ended, one killed) opened in
the monitor offers "Continue killed runs" in the command palette, which starts a real
supervisor that continues the run from its checkpoint (stand-in trainer)."""

from __future__ import annotations

import asyncio

import pytest
from test_sup_helpers import (
    campaign_over,
    fake_env,
    launch,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    retrain,
    state,
    statuses,
    wait_until,
)
from test_sup_helpers import write_campaign as _write_campaign
from waits import ceiling, palette_offers

from retrain_tui.app import RetrainApp
from retrain_tui.screens.monitor import MonitorScreen

pytestmark = pytest.mark.usefixtures("procs")


def test_palette_continues_a_stopped_campaign(tmp_path, monkeypatch):
    gate = tmp_path / "gate"
    cfg = _write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=4)
    cfg.write_text(cfg.read_text() + '\n[data]\nsource = "arithmetic"\n')
    env = fake_env(tmp_path, step_s=0.01, gate=gate, gate_step=3)
    root = launch(tmp_path, cfg, env)
    run = "grpo+none_s1"
    wait_until(lambda: (root / "runs" / run / "metrics.jsonl").exists()
               and len((root / "runs" / run / "metrics.jsonl").read_text().splitlines()) >= 3,
               60, what="run at its gate")
    assert retrain(["stop", root, "--wait", "120"], env, tmp_path).returncode == 0
    assert statuses(root) == {run: "killed"}
    gate.touch()
    for key in ("RETRAIN_TRAINER_CMD", "PYTHONPATH", "FAKE_STEP_S", "FAKE_GATE", "FAKE_GATE_STEP"):
        monkeypatch.setenv(key, env[key])  # the supervisor the app starts inherits them

    async def drive() -> None:
        app = RetrainApp(root, strict=True, poll_interval=0.1)
        async with app.run_test(size=(100, 30)) as pilot:
            deadline = asyncio.get_running_loop().time() + ceiling(20)
            while not (isinstance(app.screen, MonitorScreen) and app.screen.finished):
                assert asyncio.get_running_loop().time() < deadline, "monitor never ready"
                await pilot.pause(0.05)
            await palette_offers(pilot, "Continue killed runs")
            await pilot.press("enter")
            deadline = asyncio.get_running_loop().time() + ceiling(30)
            while state(root)["runs"][run]["attempt"] < 2:
                assert asyncio.get_running_loop().time() < deadline, "no second attempt"
                await pilot.pause(0.1)
            await pilot.press("q")

    asyncio.run(drive())
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    r = state(root)["runs"][run]
    assert (r["status"], r["attempt"]) == ("succeeded", 2)
    starts = (root / "runs" / run / "starts.log").read_text().split("\n")
    assert [line.split()[1] for line in starts if line] == ["0", "2"]  # from its checkpoint
