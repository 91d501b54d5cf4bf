"""Issue #11 item 10: grace must be finite and positive, `restart --wait` says "queued",
the squeeze child never outlives its supervisor, a launch that fails with an OSError
counts like any other failure (and is not an attempt).
"""

from __future__ import annotations

import json
import signal
import sys

import psutil
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
    path = _write_campaign(tmp_path, **kw)
    path.write_text(path.read_text() + '\n[data]\nsource = "arithmetic"\n')
    return path


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_grace_seconds_must_be_finite_and_positive(tmp_path, value):
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1)
    res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs", f"--grace-seconds={value}"],
                  fake_env(tmp_path), tmp_path)
    assert res.returncode == 2 and "--grace-seconds must be a finite number" in res.stderr
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_restart_wait_reports_queued_behind_max_workers(tmp_path):
    gate = tmp_path / "gate"
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=1, max_steps=3, parallel=True,
                         max_workers=1)
    env = fake_env(tmp_path, step_s=0.02, gate=gate, gate_step=1)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: statuses(root)["grpo+none_s1"] == "running", 60, what="first run")
    res = retrain(["restart", root, "grpo+none_s2", "--wait", "3"], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "queued: grpo+none_s2 waits for a free worker" in res.stdout
    gate.touch()
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    assert set(statuses(root).values()) == {"succeeded"}


SLOW_SQUEEZE = "import os, sys, time\nopen(sys.argv[1], 'a').write(f'{os.getpid()}\\n')\ntime.sleep(600)\n"


def test_squeeze_child_dies_with_its_supervisor_and_runs_once_after_resume(tmp_path):
    script, pids = tmp_path / "slow_squeeze.py", tmp_path / "squeeze_pids"
    script.write_text(SLOW_SQUEEZE)
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=2, squeeze=True)
    env = fake_env(tmp_path, step_s=0.01)
    env["RETRAIN_SQUEEZE_CMD"] = f"{sys.executable} {script} {pids}"
    root = launch(tmp_path, cfg, env)

    def squeeze_pids() -> list[int]:
        return [int(x) for x in pids.read_text().split()] if pids.exists() else []

    wait_until(lambda: len(squeeze_pids()) == 1, 60, what="squeeze started")
    first = psutil.Process(squeeze_pids()[0])
    kill_pid(json.loads((root / "supervisor.pid").read_text())["pid"], signal.SIGKILL)
    first.wait(60)  # the death signal ends it with its supervisor (raises on timeout)

    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: len(squeeze_pids()) == 2, 60, what="squeeze again")
    wait_until(lambda: state(root)["squeeze"]["status"] == "running", 60, what="squeeze state")
    alive = [p for p in squeeze_pids() if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [squeeze_pids()[1]]  # one analysis at a time
    retrain(["stop", root, "--wait", "60"], env, tmp_path)
    wait_until(lambda: not supervisor_alive(root), 60, what="stopped")
    assert not psutil.pid_exists(squeeze_pids()[1]) or psutil.Process(
        squeeze_pids()[1]).status() == psutil.STATUS_ZOMBIE


def test_launch_oserror_counts_toward_retries_and_the_breaker(tmp_path):
    gate = tmp_path / "gate"
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=1, max_steps=2, max_retries=2)
    env = fake_env(tmp_path, step_s=0.01, gate=gate, gate_step=1)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: statuses(root)["grpo+none_s1"] == "running", 60, what="first run")
    (root / "runs" / "grpo+none_s2" / "wrapper.log").mkdir()  # opening it will fail: EISDIR
    gate.touch()
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    st = state(root)
    r = st["runs"]["grpo+none_s2"]
    assert (r["status"], r["retries"], r["attempt"]) == ("failed", 2, 0)  # never spawned
    assert r["error"].startswith("could not start: ") and "Is a directory" in r["error"]
    assert st["supervisor"]["paused"] and "could not start" in st["supervisor"]["pause_reason"]
