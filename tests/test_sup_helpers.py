"""Shared helpers for the supervisor tests: a stand-in trainer and process hygiene.

The stand-in trainer speaks the real trainer's protocol (`CONFIG --run-dir --run-name
--condition`, metrics.jsonl, checkpoints, exit 75 after SIGTERM, resume from checkpoint)
and is steered by FAKE_* environment variables. Every test that starts processes uses
the `procs` fixture, which kills whatever is left at teardown, even after a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from waits import wait_until  # noqa: F401  (re-exported for the supervisor tests)

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

FAKE_TRAINER = r'''
import json, os, signal, subprocess, sys, time, tomllib
from pathlib import Path
from retrain_core.throttle import open_throttle

config, _, run_dir, _, name, _, label = sys.argv[1:8]
run_dir = Path(run_dir)
cfg = tomllib.loads(Path(config).read_text())
steps = cfg["training"]["max_steps"]
step_s = float(os.environ.get("FAKE_STEP_S", "0.05"))
stop = []
if os.environ.get("FAKE_IGNORE_TERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
ckpt = run_dir / "checkpoints"
start = 0
if (ckpt / "latest.json").exists():
    start = json.loads((ckpt / "latest.json").read_text())["step"]
with open(run_dir / "starts.log", "a") as f:
    f.write(f"{os.getpid()} {start}\n")
if os.environ.get("FAKE_SPAWN") == "1":
    kids = [
        subprocess.Popen(["sleep", "300"]),
        subprocess.Popen(["sleep", "301"], start_new_session=True),
        subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "time.sleep(302)"]),
    ]
    # a grandchild whose parent exits: re-parented, in its own session
    subprocess.Popen([sys.executable, "-c",
                      "import os, subprocess; os.setsid(); subprocess.Popen(['sleep', '303']); os._exit(0)"]).wait()
    (run_dir / "fake_children.json").write_text(json.dumps([k.pid for k in kids]))
fail = os.environ.get("FAKE_FAIL", "")
fail_once = os.environ.get("FAKE_FAIL_ONCE") == "1"
throttle = open_throttle(cfg["backend"]["throttle_dir"], cfg["backend"]["max_concurrent"], name)
# FAKE_GATE=path holds the run before step FAKE_GATE_STEP (default: its last step) until
# that file exists, so a test can keep a run alive for as long as it needs, on any machine.
gate = os.environ.get("FAKE_GATE", "")
gate_step = int(os.environ.get("FAKE_GATE_STEP", steps - 1))
# Steps count from 0 like the real trainer; checkpoints record the number of steps done.
for step in range(start, steps):
    while gate and step >= gate_step and not os.path.exists(gate) and not stop:
        time.sleep(0.02)
    if stop:
        sys.exit(75)
    t0 = time.time()
    with throttle:
        hold = (time.time(), None)
        time.sleep(step_s)
        hold = (hold[0], time.time())
    rec = {"step": step, "run": name, "condition": label, "mean_reward": (step + 1) / steps,
           "correct_rate": 0.5, "loss": 1.0 / (step + 1), "step_time_s": time.time() - t0,
           "throttle_wait_s": throttle.last_wait_s, "hold": hold, "time": time.time()}
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    if fail and (fail == "*" or name in fail.split(",")) and step == 0:
        if not (fail_once and (run_dir / "failed_once").exists()):
            (run_dir / "failed_once").touch()
            print("Traceback (most recent call last):", file=sys.stderr)
            print("RuntimeError: boom", file=sys.stderr)
            sys.exit(3)
    if (step + 1) % 2 == 0 or stop:
        ckpt.mkdir(exist_ok=True)
        (ckpt / "latest.json").write_text(json.dumps({"step": step + 1}))
    if stop:
        sys.exit(75)
(ckpt / "final").mkdir(parents=True, exist_ok=True)
(ckpt / "final" / "adapter_config.json").write_text("{}")
with open(run_dir / "completions.log", "a") as f:
    f.write(f"{os.getpid()}\n")
'''


def write_fake_trainer(tmp_path: Path) -> Path:
    path = tmp_path / "fake_trainer.py"
    path.write_text(FAKE_TRAINER)
    return path


def write_campaign(tmp_path: Path, *, seeds=(1, 2), conditions=2, max_steps=4,
                   parallel=False, max_workers=0, stagger=0.0, max_retries=0,
                   max_concurrent=4, squeeze=False, backend="local", name="c.toml") -> Path:
    conds = [("grpo", "none"), ("maxrl", "none"), ("maxrl", "gtpo")][:conditions]
    cond_text = ",\n  ".join(f'{{ advantage_mode = "{a}", transform_mode = "{t}" }}' for a, t in conds)
    text = textwrap.dedent(f"""\
        [campaign]
        seeds = [{", ".join(str(s) for s in seeds)}]
        max_steps = {max_steps}
        parallel = {"true" if parallel else "false"}
        max_workers = {max_workers}
        stagger_seconds = {stagger}
        max_retries = {max_retries}
        conditions = [
          {cond_text},
        ]

        [backend]
        backend = "{backend}"
        devices = "cpu"
        max_concurrent = {max_concurrent}

        [model]
        model = "builtin:tiny-arith"
        lora_rank = 4
        """)
    if squeeze:
        text += "\n[squeeze]\nmin_variance_retention = 0.9\n"
    path = tmp_path / name
    path.write_text(text)
    return path


def fake_env(tmp_path: Path, **fake) -> dict:
    env = dict(os.environ)
    env.pop("RETRAIN_RUN_ID", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["RETRAIN_TRAINER_CMD"] = f"{PY} {write_fake_trainer(tmp_path)}"
    for key, value in fake.items():
        env[f"FAKE_{key.upper()}"] = str(value)
    return env


def retrain(args: list[str], env: dict, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "retrain_core.cli", *map(str, args)], check=False, env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def launch(tmp_path: Path, config: Path, env: dict, *extra) -> Path:
    res = retrain(["campaign", config, "--logs-dir", tmp_path / "logs", *extra], env, tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    root = Path(res.stdout.strip().splitlines()[-1])
    assert root.is_dir()
    return root


def state(root: Path) -> dict:
    return json.loads((root / "state.json").read_text())


def statuses(root: Path) -> dict:
    return {name: r["status"] for name, r in state(root)["runs"].items()}


def campaign_over(root: Path) -> bool:
    from retrain_core.supervisor.api import supervisor_alive

    st = state(root)
    return (not supervisor_alive(root)) and all(
        r["status"] in ("succeeded", "failed", "killed") for r in st["runs"].values())


def run_processes(campaign_name: str) -> list[psutil.Process]:
    """Every live process carrying this campaign's run marker."""
    out = []
    for proc in psutil.process_iter():
        try:
            marker = proc.environ().get("RETRAIN_RUN_ID", "")
            if marker.startswith(campaign_name + "/") and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.Error, OSError):
            continue
    return out


@pytest.fixture
def procs(tmp_path):
    """Teardown safety net: kill every supervisor and run process the test left behind."""
    extra: list[psutil.Process] = []
    yield extra
    for pid_file in (tmp_path / "logs").glob("campaign_*/supervisor.pid"):
        try:
            rec = json.loads(pid_file.read_text())
            proc = psutil.Process(rec["pid"])
            if abs(proc.create_time() - rec["start_time"]) < 0.01:
                proc.kill()
        except (psutil.Error, OSError, ValueError, KeyError):
            pass
    for root in (tmp_path / "logs").glob("campaign_*"):
        for proc in run_processes(root.name):
            try:
                proc.kill()
            except psutil.Error:
                pass
    for proc in extra:
        try:
            proc.kill()
        except psutil.Error:
            pass


def kill_pid(pid: int, sig=signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
