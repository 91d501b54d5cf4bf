"""Issue #11 item 5: the error that ended a run is the trainer's exception (error.json),
not the last stderr line; status and the circuit breaker use it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from test_sup_helpers import (
    REPO,
    campaign_over,
    fake_env,
    launch,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    retrain,
    state,
    wait_until,
)
from test_sup_helpers import write_campaign as _write_campaign
from test_train_run import trainer_env, write_config

from retrain_core.error_record import oom_kills, read_error

pytestmark = pytest.mark.usefixtures("procs")

# A trainer that dies of an exception whose last stderr line is a warning fragment, as a
# real torch trainer's often is. FAIL_SAME=1: every run raises the same error.
FAILING_TRAINER = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    from retrain_core.error_record import write_error
    run_dir, name = Path(sys.argv[3]), sys.argv[5]
    detail = "the same" if os.environ.get("FAIL_SAME") == "1" else name
    try:
        raise RuntimeError(f"CUDA error in {detail}")
    except RuntimeError as exc:
        write_error(run_dir, exc)
    print("  return forward_call(*args, **kwargs)", file=sys.stderr)
    sys.exit(1)
''')


def failing_campaign(tmp_path, same: bool):
    path = _write_campaign(tmp_path, seeds=(1, 2, 3, 4), conditions=1, max_steps=2)
    path.write_text(path.read_text() + '\n[data]\nsource = "arithmetic"\n')
    script = tmp_path / "failing_trainer.py"
    script.write_text(FAILING_TRAINER)
    env = fake_env(tmp_path)
    env["RETRAIN_TRAINER_CMD"] = f"{sys.executable} {script}"
    env["FAIL_SAME"] = "1" if same else "0"
    return path, env


def test_breaker_compares_the_exception_not_the_last_stderr_line(tmp_path):
    cfg, env = failing_campaign(tmp_path, same=False)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    st = state(root)
    # four different errors behind one identical stderr line: the breaker stays closed
    assert not st["supervisor"]["paused"], st["supervisor"]["pause_reason"]
    assert {r["status"] for r in st["runs"].values()} == {"failed"}
    error = st["runs"]["grpo+none_s3"]["error"]
    assert error.splitlines()[0] == "exit code 1"
    assert error.splitlines()[-1] == "RuntimeError: CUDA error in grpo+none_s3"
    out = retrain(["status", root], env, tmp_path).stdout
    assert "RuntimeError: CUDA error in grpo+none_s3" in out


def test_breaker_trips_on_the_same_exception(tmp_path):
    cfg, env = failing_campaign(tmp_path, same=True)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: state(root)["supervisor"]["paused"], 120, what="breaker")
    reason = state(root)["supervisor"]["pause_reason"]
    assert reason.endswith("RuntimeError: CUDA error in the same"), reason
    retrain(["stop", root, "--wait", "60"], env, tmp_path)


def test_real_trainer_records_its_exception(tmp_path):
    (tmp_path / "badreward.py").write_text(
        "def score(completion, answer):\n    raise ValueError('reward exploded')\n")
    cfg = write_config(tmp_path / "run.toml", max_steps=2)
    cfg.write_text(cfg.read_text().replace('[data]', '[reward]\ntype = "badreward.score"\n[data]'))
    run_dir = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "retrain_core.cli", "run", str(cfg), "--run-dir",
                          str(run_dir), "--quiet"], capture_output=True, text=True, timeout=600,
                         env=trainer_env(), cwd=REPO, check=False)
    assert res.returncode != 0, res.stdout + res.stderr
    record = read_error(run_dir)
    assert record is not None, res.stderr[-2000:]
    assert "reward exploded" in record["message"] or any(
        "reward exploded" in line for line in record["traceback"]), record
    assert record["traceback"], record
    assert json.loads((run_dir / "exit.json").read_text())["returncode"] == res.returncode


def test_oom_counter_is_readable_where_the_kernel_exposes_it():
    count = oom_kills()
    if count is None:
        pytest.skip("no cgroup memory.events / memory.oom_control readable here")
    assert count >= 0
