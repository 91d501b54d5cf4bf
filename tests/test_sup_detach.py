"""The supervisor outlives its terminal and its own death; recorded pids are verified."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest
from test_sup_helpers import (
    PY,
    campaign_over,
    fake_env,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    retrain,
    run_processes,
    state,
    wait_until,
    write_campaign,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("procs")]


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sighup_to_terminal_group_and_launcher_exit(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=1, max_steps=12, parallel=True)
    env = fake_env(tmp_path, step_s=0.1)
    # A stand-in login shell: its own session/process group, like a terminal's; it launches
    # the campaign and then lingers like an interactive shell would.
    shell = subprocess.Popen(
        ["/bin/sh", "-c", (f'"{PY}" -m retrain_core.cli campaign "{cfg}" --logs-dir '
                          f'"{tmp_path / "logs"}" > "{tmp_path / "out.txt"}" 2>&1; sleep 60')],
        env=env, cwd=tmp_path, start_new_session=True)
    try:
        wait_until(lambda: any(tmp_path.glob("logs/campaign_*/runs/*/metrics.jsonl")), 30,
                   what="campaign launched and running")
        wait_until(lambda: "campaign_" in (tmp_path / "out.txt").read_text(), 10,
                   what="the launcher printed the campaign directory")
        root = next((tmp_path / "logs").glob("campaign_*"))
        os.killpg(shell.pid, signal.SIGHUP)  # the terminal hangs up
        shell.wait(timeout=10)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    assert shell.returncode != 0  # the shell itself died of the hang-up
    wait_until(lambda: campaign_over(root), 40, what="campaign end after hang-up")
    st = state(root)
    assert {r["status"] for r in st["runs"].values()} == {"succeeded"}
    for name in st["runs"]:
        assert len(_lines(root / "runs" / name / "metrics.jsonl")) == 12


def test_supervisor_sigkill_then_resume_runs_everything_once(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=2, max_steps=10, parallel=True,
                         max_workers=2)
    gate = tmp_path / "let-runs-finish"  # runs hold before their last step until it exists
    env = fake_env(tmp_path, step_s=0.1, gate=gate)
    res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    root = next((tmp_path / "logs").glob("campaign_*"))
    wait_until(lambda: sum(r["status"] == "running" for r in state(root)["runs"].values()) == 2,
               60, what="two runs running")
    sup = json.loads((root / "supervisor.pid").read_text())
    os.kill(sup["pid"], signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(sup["pid"]) or
               psutil.Process(sup["pid"]).status() == psutil.STATUS_ZOMBIE, 30)
    assert len(run_processes(root.name)) >= 4  # the runs kept going without it
    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: "adopted running attempt 1" in (root / "supervisor.log").read_text(), 60,
               what="the new supervisor adopted the live runs")
    gate.touch()
    wait_until(lambda: campaign_over(root), 120, what="campaign end after resume")
    st = state(root)
    assert {r["status"] for r in st["runs"].values()} == {"succeeded"}
    for name, r in st["runs"].items():
        run_dir = root / "runs" / name
        assert len(_lines(run_dir / "starts.log")) == 1, name  # never started twice
        assert len(_lines(run_dir / "completions.log")) == 1, name
        assert r["attempt"] == 1
    log = (root / "supervisor.log").read_text()
    assert "adopted running attempt 1" in log


def test_recorded_pid_of_unrelated_process_is_never_signalled(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=2)
    env = fake_env(tmp_path, step_s=0.01)
    res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    root = next((tmp_path / "logs").glob("campaign_*"))
    wait_until(lambda: campaign_over(root), 30)
    # An unrelated process now has the pid the state records; its start time differs.
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        st = state(root)
        run = st["runs"]["grpo+none_s1"]
        run.update(status="running", pid=bystander.pid, pgid=bystander.pid,
                   proc_start_time=psutil.Process(bystander.pid).create_time() - 100)
        (root / "state.json").write_text(json.dumps(st))
        # …and the run left no exit record: the supervisor must not take the bystander for it.
        (root / "runs" / "grpo+none_s1" / "exit.json").unlink()
        res = retrain(["campaign", "--resume", root, "--grace-seconds", "0.2"], env, tmp_path)
        assert res.returncode == 0, res.stderr
        retrain(["kill", root, "grpo+none_s1"], env, tmp_path)
        retrain(["stop", root], env, tmp_path)
        wait_until(lambda: campaign_over(root), 30)
        time.sleep(0.3)
        assert bystander.poll() is None  # alive: never signalled
        assert psutil.Process(bystander.pid).status() != psutil.STATUS_STOPPED
        run = state(root)["runs"]["grpo+none_s1"]
        assert run["status"] == "failed" and "vanished" in run["error"]
    finally:
        bystander.kill()
        bystander.wait()


def test_resume_after_death_between_intent_and_spawn(tmp_path, monkeypatch):
    from retrain_core.config import load_campaign
    from retrain_core.supervisor import api
    from retrain_core.supervisor.campdir import create_campaign_dir

    env = fake_env(tmp_path, step_s=0.01)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=2)
    root = create_campaign_dir(load_campaign(cfg), tmp_path / "logs")
    st = state(root)  # a supervisor recorded the intent to launch, then died before spawning
    st["runs"]["grpo+none_s1"].update(attempt=1, launching=True, launched_at=time.time())
    (root / "state.json").write_text(json.dumps(st))
    api.resume(root)
    wait_until(lambda: (root / "supervisor.pid").exists() and campaign_over(root), 30)
    run = state(root)["runs"]["grpo+none_s1"]
    assert (run["status"], run["attempt"], run["launching"]) == ("succeeded", 1, False)
    assert len(_lines(root / "runs" / "grpo+none_s1" / "starts.log")) == 1


def test_supervisor_killed_mid_kill_the_resumed_one_finishes_it(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=500)
    env = fake_env(tmp_path, step_s=0.1, ignore_term=1)  # the trainer shrugs off SIGTERM
    res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs", "--grace-seconds", "30"],
                  env, tmp_path)
    assert res.returncode == 0, res.stderr
    root = next((tmp_path / "logs").glob("campaign_*"))
    run = "grpo+none_s1"
    wait_until(lambda: (root / "runs" / run / "metrics.jsonl").exists(), 20, what="training")
    assert retrain(["kill", root, run], env, tmp_path).returncode == 0
    wait_until(lambda: state(root)["runs"][run].get("kill_requested") == "killed", 10,
               what="kill in its grace period")
    sup = json.loads((root / "supervisor.pid").read_text())
    os.kill(sup["pid"], signal.SIGKILL)  # dies during the 30 s grace period
    res = retrain(["campaign", "--resume", root, "--grace-seconds", "0.5"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: campaign_over(root), 20, what="kill finished by the new supervisor")
    assert state(root)["runs"][run]["status"] == "killed"
    assert run_processes(root.name) == []
