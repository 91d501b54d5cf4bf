"""Issue #11 item 9: a daemon that dropped the run marker and double-forked into its own
session, whose wrapper is then SIGKILLed, comes back to the supervisor (a child
subreaper) and is ended with its run.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap

import psutil
import pytest
from test_sup_helpers import (
    campaign_over,
    fake_env,
    kill_pid,
    launch,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    state,
    wait_until,
)
from test_sup_helpers import write_campaign as _write_campaign

pytestmark = pytest.mark.usefixtures("procs")

# A trainer that starts a daemon which drops RETRAIN_RUN_ID, double-forks and setsid()s.
ESCAPER = textwrap.dedent('''
    import os, subprocess, sys, time
    from pathlib import Path
    run_dir = Path(sys.argv[3])
    env = {k: v for k, v in os.environ.items() if k != "RETRAIN_RUN_ID"}
    code = ("import os, sys, time\\n"
            "if os.fork(): os._exit(0)\\n"
            "os.setsid()\\n"
            "if os.fork(): os._exit(0)\\n"
            "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\\n"
            "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\\n"
            "time.sleep(600)\\n")
    subprocess.Popen([sys.executable, "-c", code, str(run_dir / "escaped.pid")], env=env).wait()
    time.sleep(600)
''')


def test_escaped_daemon_is_ended_when_its_wrapper_is_sigkilled(tmp_path, procs):  # noqa: F811
    cfg = _write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=2)
    cfg.write_text(cfg.read_text() + '\n[data]\nsource = "arithmetic"\n')
    script = tmp_path / "escaper.py"
    script.write_text(ESCAPER)
    env = fake_env(tmp_path)
    env["RETRAIN_TRAINER_CMD"] = f"{sys.executable} {script}"
    root = launch(tmp_path, cfg, env)
    run_dir = root / "runs" / "grpo+none_s1"
    pid_file = run_dir / "escaped.pid"
    wait_until(pid_file.exists, 60, what="the daemon")
    daemon = psutil.Process(int(pid_file.read_text()))
    procs.append(daemon)
    assert "RETRAIN_RUN_ID" not in daemon.environ()  # the marker search cannot find it
    wrapper = json.loads((run_dir / "wrapper.json").read_text())
    kill_pid(wrapper["pid"], signal.SIGKILL)
    daemon.wait(120)  # ended by the supervisor (raises psutil.TimeoutExpired otherwise)
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    assert state(root)["runs"]["grpo+none_s1"]["status"] == "failed"
    log = (root / "supervisor.log").read_text()
    assert "ended processes left behind by a run" in log and str(daemon.pid) in log
