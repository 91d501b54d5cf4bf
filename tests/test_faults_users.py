"""Issue #11 item 8: other local users. A campaign folder is user-only, so another user
can neither read its files nor take `supervisor.lock`; a busy lock is reported with the
process that really holds it (from the kernel), not a dead supervisor from supervisor.pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
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
    wait_until,
)
from test_sup_helpers import write_campaign as _write_campaign

from retrain_core.supervisor.api import supervisor_alive

pytestmark = pytest.mark.usefixtures("procs")
NOBODY = 65534


def write_campaign(tmp_path, **kw):
    path = _write_campaign(tmp_path, **kw)
    path.write_text(path.read_text() + '\n[data]\nsource = "arithmetic"\n')
    return path


def as_nobody(code: str, tmp_path) -> subprocess.CompletedProcess:
    # the system interpreter: the project's venv may be closed to other users too
    return subprocess.run(["/usr/bin/python3", "-c", code], user=NOBODY, group=NOBODY,
                          capture_output=True, text=True, timeout=120, check=False, cwd="/")


def test_campaign_folder_is_closed_to_other_users(tmp_path):
    if os.geteuid() != 0 or not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("acting as another user needs root and /usr/bin/python3 (CI has both)")
    os.chmod(tmp_path, 0o755)  # let the other user reach the logs folder itself
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=2)
    env = fake_env(tmp_path, step_s=0.01)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    for path in ("manifest.json", "runs/grpo+none_s1/config.toml", "runs/grpo+none_s1/metrics.jsonl"):
        res = as_nobody(f"open({str(root / path)!r}).read()", tmp_path)
        assert "PermissionError" in res.stderr, (path, res.stderr)
    res = as_nobody("import fcntl, os\n"
                    f"fd = os.open({str(root / 'supervisor.lock')!r}, os.O_RDONLY)\n"
                    "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", tmp_path)
    assert res.returncode != 0 and "PermissionError" in res.stderr, res.stderr

    # a campaign made before (world-readable) is closed on resume, and says so
    os.chmod(root, 0o755)
    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert "now 700 (user only)" in res.stdout, res.stdout + res.stderr
    assert oct(root.stat().st_mode & 0o777) == "0o700"


def test_busy_lock_names_the_real_holder(tmp_path, procs):  # noqa: F811
    gate = tmp_path / "gate"
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=3)
    env = fake_env(tmp_path, step_s=0.01, gate=gate, gate_step=1)
    root = launch(tmp_path, cfg, env)
    dead = json.loads((root / "supervisor.pid").read_text())["pid"]
    kill_pid(dead, signal.SIGKILL)
    wait_until(lambda: not supervisor_alive(root), 30, what="supervisor gone")
    code = ("import sys, time\nfrom filelock import FileLock\n"
            "lock = FileLock(sys.argv[1])\nlock.acquire()\nprint('held', flush=True)\n"
            "time.sleep(600)\n")
    squatter = subprocess.Popen([sys.executable, "-c", code, str(root / "supervisor.lock")],
                                stdout=subprocess.PIPE, text=True)
    procs.append(psutil.Process(squatter.pid))
    assert squatter.stdout.readline().strip() == "held"
    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode != 0
    held = next(line for line in res.stderr.splitlines() if "is held by" in line)
    assert f"held by pid {squatter.pid} (user " in held, res.stderr
    assert f"pid {dead}" not in held and "lock = FileLock(sys.argv[1])" in held
    squatter.kill()
    squatter.wait()
    gate.touch()
