"""Killing, restarting and stopping runs of a live campaign (real processes and signals)."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest
from test_sup_helpers import (
    campaign_over,
    fake_env,
    launch,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    retrain,
    run_processes,
    state,
    statuses,
    wait_until,
    write_campaign,
)

from retrain_core.throttle import read_holders

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("procs")]


def _gone(proc: psutil.Process) -> bool:
    """Dead and reaped: a zombie still counts as a survivor."""
    try:
        return not proc.is_running()
    except psutil.Error:
        return True


def test_kill_run_with_escaping_grandchildren(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(7,), conditions=1, max_steps=500, max_concurrent=1)
    env = fake_env(tmp_path, spawn=1, step_s=0.2)
    root = launch(tmp_path, cfg, env, "--grace-seconds", "1")
    run = "grpo+none_s7"
    run_dir = root / "runs" / run
    wait_until(lambda: (run_dir / "fake_children.json").exists() and read_holders(root / "throttle"),
               20, what="trainer with grandchildren holding a throttle slot")
    # Every process of the run: wrapper, trainer, 3 children and the orphaned grandchild
    # in its own session (found by the run marker, its parent is gone).
    wait_until(lambda: len(run_processes(root.name)) >= 6, 10, what="six processes in the run")
    tree = run_processes(root.name)
    sessions = {p.pid: psutil.Process(p.pid).as_dict(["cmdline"])["cmdline"] for p in tree}
    assert any("303" in " ".join(c) for c in sessions.values()), sessions
    assert any(p.pid == json.loads((run_dir / "fake_children.json").read_text())[1] for p in tree)
    res = retrain(["kill", root, run, "--wait", "60"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: all(_gone(p) for p in tree), 10, what="every process of the run reaped")
    assert run_processes(root.name) == []
    st = state(root)["runs"][run]
    assert st["status"] == "killed"
    exit_rec = json.loads((run_dir / "exit.json").read_text())
    assert exit_rec["attempt"] == 1 and exit_rec["sigterm_received"]
    assert read_holders(root / "throttle") == []
    wait_until(lambda: campaign_over(root), 10, what="supervisor exit")


def test_restart_resumes_with_new_attempt_and_keeps_logs(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(3,), conditions=1, max_steps=400)
    env = fake_env(tmp_path, step_s=0.05)
    root = launch(tmp_path, cfg, env, "--grace-seconds", "5")
    run = "grpo+none_s3"
    run_dir = root / "runs" / run
    wait_until(lambda: (run_dir / "checkpoints" / "latest.json").exists(), 60, what="a checkpoint")
    res = retrain(["restart", root, run, "--wait", "60"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: len((run_dir / "starts.log").read_text().splitlines()) == 2, 60,
               what="second start")
    st = state(root)["runs"][run]
    assert st["attempt"] == 2 and st["status"] == "running"
    first_exit = json.loads((run_dir / "exit.attempt1.json").read_text())
    assert first_exit["returncode"] == 75  # checkpointed on SIGTERM
    assert (run_dir / "stdout.attempt1.log").exists() and (run_dir / "stderr.attempt1.log").exists()
    resumed_from = int((run_dir / "starts.log").read_text().splitlines()[1].split()[1])
    assert resumed_from > 0
    assert retrain(["stop", root, "--wait", "60"], env, tmp_path).returncode == 0
    assert statuses(root) == {run: "killed"}
    assert run_processes(root.name) == []
    assert (run_dir / "metrics.jsonl").exists()  # everything kept on disk


def test_pause_unpause_and_stop(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=1, max_steps=6)
    gate = tmp_path / "let-runs-finish"  # the first run stays alive until the pause is in
    env = fake_env(tmp_path, step_s=0.1, gate=gate)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: statuses(root)["grpo+none_s1"] == "running", 30, what="first run started")
    assert retrain(["pause", root, "--wait", "60"], env, tmp_path).returncode == 0
    gate.touch()
    wait_until(lambda: statuses(root)["grpo+none_s1"] == "succeeded", 30, what="first run done")
    import time

    time.sleep(0.5)
    assert statuses(root)["grpo+none_s2"] == "pending"  # paused: nothing new starts
    assert state(root)["supervisor"]["pause_reason"] == "paused by the user"
    # An explicit restart is carried out even while launching is paused.
    assert retrain(["restart", root, "grpo+none_s1", "--wait", "60"], env, tmp_path).returncode == 0
    wait_until(lambda: statuses(root)["grpo+none_s1"] == "succeeded"
               and state(root)["runs"]["grpo+none_s1"]["attempt"] == 2, 30, what="restart done")
    assert statuses(root)["grpo+none_s2"] == "pending"
    assert retrain(["unpause", root, "--wait", "60"], env, tmp_path).returncode == 0
    wait_until(lambda: campaign_over(root), 30, what="campaign end")
    assert statuses(root) == {"grpo+none_s1": "succeeded", "grpo+none_s2": "succeeded"}


def test_control_cli_errors(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=2)
    env = fake_env(tmp_path)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 20)
    res = retrain(["kill", root, "nope_s1"], env, tmp_path)
    assert res.returncode == 2 and "no run 'nope_s1'" in res.stderr
    res = retrain(["kill", root, "grpo+none_s1"], env, tmp_path)
    assert res.returncode == 1 and "--resume" in res.stderr
    res = retrain(["stop", tmp_path], env, tmp_path)
    assert res.returncode == 2 and "not a campaign directory" in res.stderr


def test_wrapper_killed_from_outside_leaves_no_orphan_trainer(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(5,), conditions=1, max_steps=500)
    env = fake_env(tmp_path, step_s=0.1)
    root = launch(tmp_path, cfg, env, "--grace-seconds", "1")
    run = "grpo+none_s5"
    wait_until(lambda: (root / "runs" / run / "metrics.jsonl").exists(), 20, what="training")
    os.kill(state(root)["runs"][run]["pid"], signal.SIGKILL)  # the wrapper, not the trainer
    wait_until(lambda: campaign_over(root), 20, what="run settled")
    st = state(root)["runs"][run]
    assert st["status"] == "failed" and "vanished" in st["error"]
    assert run_processes(root.name) == []  # the orphaned trainer was ended too
