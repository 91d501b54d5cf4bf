"""Issue #11 items 1 and 3: continue after `stop`, rebuild a lost `state.json` on resume.

Real supervisors, wrappers and stand-in trainers (tests/test_sup_helpers.py); the
stand-in checkpoints every 2 steps and records each start in `starts.log` ("pid step"),
so a test can tell "continued from its checkpoint" from "started again from 0".
"""

from __future__ import annotations

import json
import signal

import pytest
from test_sup_helpers import (
    campaign_over,
    fake_env,
    kill_pid,
    launch,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    retrain,
    state,
    statuses,
    wait_until,
)
from test_sup_helpers import write_campaign as _write_campaign

from retrain_core.supervisor.api import supervisor_alive

pytestmark = pytest.mark.usefixtures("procs")


def write_campaign(tmp_path, **kw):
    """The helper's campaign with an offline data source (no `datasets` needed)."""
    path = _write_campaign(tmp_path, **kw)
    if "[data]" not in path.read_text():
        path.write_text(path.read_text() + '\n[data]\nsource = "arithmetic"\n')
    return path


def starts(root, run) -> list[int]:
    """The step each start of the run began at."""
    path = root / "runs" / run / "starts.log"
    return [int(line.split()[1]) for line in path.read_text().splitlines()] if path.exists() else []


def steps_logged(root, run) -> int:
    path = root / "runs" / run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_stop_then_resume_continues_killed_runs(tmp_path):
    gate = tmp_path / "gate"
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=1, max_steps=6)
    env = fake_env(tmp_path, step_s=0.02, gate=gate, gate_step=3)
    root = launch(tmp_path, cfg, env)
    first, second = "grpo+none_s1", "grpo+none_s2"
    wait_until(lambda: steps_logged(root, first) >= 3, 60, what="first run at its gate")
    res = retrain(["stop", root, "--wait", "120"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert statuses(root) == {first: "killed", second: "pending"}

    gate.touch()
    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    assert f"{first}: killed run queued again" in res.stdout
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    st = state(root)
    assert {n: r["status"] for n, r in st["runs"].items()} == {first: "succeeded", second: "succeeded"}
    assert st["runs"][first]["attempt"] == 2
    assert starts(root, first) == [0, 2]  # continued from the checkpoint of step 2

    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode == 0 and "nothing to continue" in res.stdout, res.stdout + res.stderr
    assert not supervisor_alive(root)


def test_failed_runs_continue_with_retry_failed_or_restart(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=1, max_steps=3)
    env = fake_env(tmp_path, step_s=0.02, fail="*", fail_once=1)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    assert set(statuses(root).values()) == {"failed"}

    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode == 0 and "add --retry-failed" in res.stdout, res.stdout + res.stderr

    # restart with no supervisor starts one for that run alone
    res = retrain(["restart", root, "grpo+none_s1", "--wait", "120"], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "started a supervisor" in res.stdout
    wait_until(lambda: campaign_over(root), 120, what="restart end")
    assert statuses(root) == {"grpo+none_s1": "succeeded", "grpo+none_s2": "failed"}

    res = retrain(["campaign", "--resume", root, "--retry-failed"], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "grpo+none_s2: failed run queued again" in res.stdout
    wait_until(lambda: campaign_over(root), 120, what="retry end")
    st = state(root)
    assert {n: (r["status"], r["attempt"]) for n, r in st["runs"].items()} == {
        "grpo+none_s1": ("succeeded", 2), "grpo+none_s2": ("succeeded", 2)}


def test_control_commands_without_supervisor_answer_clearly(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=2)
    env = fake_env(tmp_path, step_s=0.01)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    for args in (["stop", root], ["pause", root], ["kill", root, "grpo+none_s1"]):
        res = retrain(args, env, tmp_path)
        assert res.returncode == 1 and "no supervisor is running" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


@pytest.mark.parametrize("damage", ["deleted", "garbage", "unknown status"])
def test_resume_rebuilds_lost_state_and_adopts_live_runs(tmp_path, damage):
    gate = tmp_path / "gate"
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=1, max_steps=4, parallel=True)
    env = fake_env(tmp_path, step_s=0.02, gate=gate, gate_step=2)
    root = launch(tmp_path, cfg, env)
    names = ["grpo+none_s1", "grpo+none_s2"]
    wait_until(lambda: all(steps_logged(root, n) >= 2 for n in names), 60, what="runs at the gate")
    kill_pid(json.loads((root / "supervisor.pid").read_text())["pid"], signal.SIGKILL)
    wait_until(lambda: not supervisor_alive(root), 30, what="supervisor gone")
    path = root / "state.json"
    if damage == "deleted":
        path.unlink()
    elif damage == "garbage":
        path.write_text('{"runs": {"grpo+no')
    else:
        data = json.loads(path.read_text())
        data["runs"]["grpo+none_s2"]["status"] = "exploded"
        path.write_text(json.dumps(data))

    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    if damage == "unknown status":
        assert "run 'grpo+none_s2' was unusable (status 'exploded')" in res.stdout
    else:
        assert "rebuilt state.json" in res.stdout
        assert "grpo+none_s1: running attempt 1" in res.stdout
    gate.touch()
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    st = state(root)
    assert {n: (r["status"], r["attempt"]) for n, r in st["runs"].items()} == {
        n: ("succeeded", 1) for n in names}
    assert all(starts(root, n) == [0] for n in names)  # adopted, never started twice

    # once more, from the run folders alone: everything ended, nothing to do
    path.write_text("")
    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "succeeded on attempt 1 (from exit.json)" in res.stdout and "nothing to continue" in res.stdout
    assert state(root)["runs"]["grpo+none_s1"]["status"] == "succeeded"


def test_resume_fails_when_the_new_supervisor_dies_while_adopting(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=2)
    env = fake_env(tmp_path, step_s=0.01)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    # A state that says the run is running (its wrapper long gone) and a manifest entry the
    # supervisor cannot use while adopting it: the new supervisor dies during adoption,
    # while the old heartbeat is still in state.json.
    data = state(root)
    data["runs"]["grpo+none_s1"].update(status="running", pid=1, proc_start_time=0.0)
    (root / "state.json").write_text(json.dumps(data))
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["runs"][0]["condition"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode != 0, res.stdout
    assert "did not start" in res.stderr and "Traceback" not in res.stdout
