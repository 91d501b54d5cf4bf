"""Issue #11 item 2: a full disk. The campaign lives on a small tmpfs (root only: CI runs
as root); a filler file takes the space away while a real supervisor runs stand-in
trainers, and gives it back.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from test_sup_helpers import (
    campaign_over,
    fake_env,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    retrain,
    state,
    statuses,
    wait_until,
)
from test_sup_helpers import write_campaign as _write_campaign

pytestmark = pytest.mark.usefixtures("procs")

MB = 2**20


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a full-disk test mounts a small tmpfs, which needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount, leave_bytes: int) -> None:
    """Take the free space of `mount` down to about `leave_bytes`."""
    with open(mount / "filler", "ab") as f:
        chunk = b"\0" * MB
        try:
            while shutil.disk_usage(mount).free > leave_bytes + MB:
                f.write(chunk)
                f.flush()
            f.write(b"\0" * max(0, shutil.disk_usage(mount).free - leave_bytes))
            f.flush()
        except OSError:
            pass  # full already


def test_full_disk_pauses_launching_and_everything_answers(tmp_path, small_disk):
    gate = tmp_path / "gate"
    cfg = _write_campaign(tmp_path, seeds=(1, 2, 3), conditions=1, max_steps=3)
    cfg.write_text(cfg.read_text().replace("[campaign]\n", "[campaign]\nmin_free_gb = 0.03\n")
                   + '\n[data]\nsource = "arithmetic"\n')
    env = fake_env(tmp_path, step_s=0.02, gate=gate, gate_step=1)
    res = retrain(["campaign", cfg, "--logs-dir", small_disk / "logs"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    root = small_disk / "logs" / res.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1]
    first = "grpo+none_s1"
    wait_until(lambda: (root / "runs" / first / "metrics.jsonl").exists(), 60, what="first step")

    # 10 MB left, the campaign wants 30: the running run may finish, nothing new starts
    fill(small_disk, 10 * MB)
    gate.touch()
    wait_until(lambda: statuses(root)[first] == "succeeded", 60, what="first run done")
    wait_until(lambda: state(root)["supervisor"]["paused"], 60, what="disk pause")
    reason = state(root)["supervisor"]["pause_reason"]
    assert reason.startswith("disk full: ") and str(small_disk) in reason, reason
    out = retrain(["status", root], env, tmp_path)
    assert "! disk full: " in out.stdout and "paused (disk full" in out.stdout, out.stdout

    # completely full: commands answer with a message and an exit code, never a traceback
    fill(small_disk, 0)
    for args in (["pause", root], ["stop", root], ["kill", root, "grpo+none_s2"]):
        res = retrain(args, env, tmp_path)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert "No space left on device" in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = retrain(["status", root, "--json"], env, tmp_path)
    assert "Traceback" not in res.stderr and '"disk": "disk full: ' in res.stdout
    assert {n: r["attempt"] for n, r in state(root)["runs"].items()} == {
        "grpo+none_s1": 1, "grpo+none_s2": 0, "grpo+none_s3": 0}  # no launch ticks counted

    # space back: launching resumes by itself, each run started once
    (small_disk / "filler").unlink()
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    st = state(root)
    assert {n: (r["status"], r["attempt"]) for n, r in st["runs"].items()} == {
        n: ("succeeded", 1) for n in ("grpo+none_s1", "grpo+none_s2", "grpo+none_s3")}
    assert not st["supervisor"]["paused"]
