"""`retrain campaign`: validation, directory layout, scheduling, throttle, failures."""

from __future__ import annotations

import itertools
import json
import subprocess
import tomllib
from pathlib import Path

import pytest
from test_sup_helpers import (
    PY,
    campaign_over,
    fake_env,
    launch,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    retrain,
    state,
    statuses,
    wait_until,
    write_campaign,
)

pytestmark = pytest.mark.usefixtures("procs")


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_serial_campaign_layout_and_status(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=2, max_steps=3, squeeze=True)
    env = fake_env(tmp_path, step_s=0.02)
    root = launch(tmp_path, cfg, env)
    assert root.parent == tmp_path / "logs" and root.name.startswith("campaign_")
    wait_until(lambda: campaign_over(root), 40, what="campaign end")
    assert (root / "campaign.toml").read_text() == cfg.read_text()
    manifest = json.loads((root / "manifest.json").read_text())
    names = ["grpo+none_s1", "grpo+none_s2", "maxrl+none_s1", "maxrl+none_s2"]
    assert [r["name"] for r in manifest["runs"]] == names
    assert manifest["seeds"] == [1, 2] and manifest["max_steps"] == 3
    assert [c["label"] for c in manifest["conditions"]] == ["grpo+none", "maxrl+none"]
    assert all(r["dir"] == f"runs/{r['name']}" for r in manifest["runs"])
    for name in names:
        run_dir = root / "runs" / name
        resolved = tomllib.loads((run_dir / "config.toml").read_text())
        assert resolved["backend"]["throttle_dir"] == str((root / "throttle").resolve())
        assert resolved["logging"]["log_dir"] == str(run_dir.resolve())
        assert resolved["training"]["max_steps"] == 3
        assert json.loads((run_dir / "exit.json").read_text())["returncode"] == 0
        assert [m["step"] for m in _metrics(run_dir)] == [0, 1, 2]
        for f in ("stdout.log", "stderr.log", "wrapper.json"):
            assert (run_dir / f).exists(), f
    st = state(root)
    assert all(r["status"] == "succeeded" and r["attempt"] == 1 for r in st["runs"].values())
    runs = [st["runs"][n] for n in names]
    for before, after in itertools.pairwise(runs):  # parallel = false: one at a time
        assert after["launched_at"] >= before["ended_at"]
    # The stand-in adapter is not a real LoRA adapter: the auto-squeeze fails, the campaign
    # is unaffected and the failure is recorded.
    assert st["squeeze"]["status"] == "failed" and st["squeeze"]["run"] == "grpo+none_s1"
    assert oct((root / "control").stat().st_mode & 0o777) == "0o700"

    res = retrain(["status", tmp_path / "logs", "--json"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)["campaigns"][0]
    assert out["campaign"] == root.name and out["counts"] == {"succeeded": 4}
    assert {r["name"]: (r["step"], r["max_steps"]) for r in out["runs"]} == {n: (3, 3) for n in names}
    assert out["runs"][0]["metrics"]["mean_reward"] == 1.0
    text = retrain(["status", root], env, tmp_path).stdout
    assert root.name in text and "grpo+none_s1" in text and "3/3" in text


def test_invalid_config_and_unavailable_backend(tmp_path):
    env = fake_env(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("[campaign]\nseeds = [1, 1]\n[trainingg]\nlr = 1\n")
    res = retrain(["campaign", bad, "--logs-dir", tmp_path / "logs"], env, tmp_path)
    assert res.returncode == 2 and "bad.toml" in res.stderr
    tinker = write_campaign(tmp_path, backend="tinker")
    res = retrain(["campaign", tinker, "--logs-dir", tmp_path / "logs"], env, tmp_path)
    assert res.returncode == 2 and "tinker" in res.stderr and "cannot run here" in res.stderr
    assert not list((tmp_path / "logs").glob("campaign_*"))  # nothing was started


@pytest.mark.slow
def test_max_workers_stagger_and_throttle_limit(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1, 2, 3), conditions=2, max_steps=12, parallel=True,
                         max_workers=3, stagger=0.25, max_concurrent=2)
    env = fake_env(tmp_path, step_s=0.06)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 60, what="campaign end")
    runs = state(root)["runs"]
    assert all(r["status"] == "succeeded" for r in runs.values())
    launches = sorted(r["launched_at"] for r in runs.values())
    assert all(b - a >= 0.25 - 1e-3 for a, b in itertools.pairwise(launches)), launches
    for t in launches:  # at every launch, at most max_workers runs were live
        live = [r for r in runs.values() if r["launched_at"] <= t < r["ended_at"]]
        assert len(live) <= 3, (t, runs)
    assert max(len([r for r in runs.values() if r["launched_at"] <= t < r["ended_at"]])
               for t in launches) == 3, runs
    # Throttle: never more than max_concurrent holders across all run processes.
    holds = [m["hold"] for name in runs for m in _metrics(root / "runs" / name)]
    events = sorted([(s, 1) for s, _ in holds] + [(e, -1) for _, e in holds])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    assert peak == 2, holds


@pytest.mark.slow
def test_retry_then_circuit_breaker(tmp_path):
    # Every run fails at its first step once; one retry each makes them all succeed.
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=2, max_steps=2, max_retries=1)
    env = fake_env(tmp_path, fail="*", fail_once=1, step_s=0.01)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 40, what="campaign end")
    for r in state(root)["runs"].values():
        assert (r["status"], r["attempt"], r["retries"]) == ("succeeded", 2, 1)
    run_dir = root / "runs" / "grpo+none_s1"
    assert json.loads((run_dir / "exit.attempt1.json").read_text())["returncode"] == 3
    assert "RuntimeError: boom" in (run_dir / "stderr.attempt1.log").read_text()

    # Always failing, no retries: the third identical failure pauses launching.
    cfg = write_campaign(tmp_path, seeds=(1, 2), conditions=2, max_steps=2, name="cb.toml")
    env = fake_env(tmp_path, fail="*", step_s=0.01)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: state(root)["supervisor"]["paused"], 40, what="circuit breaker")
    st = state(root)
    assert "circuit breaker" in st["supervisor"]["pause_reason"]
    assert "RuntimeError: boom" in st["supervisor"]["pause_reason"]
    failed = [r for r in st["runs"].values() if r["status"] == "failed"]
    assert len(failed) == 3 and all(r["exit_code"] == 3 for r in failed)
    assert all("RuntimeError: boom" in r["error"] and "exit code 3" in r["error"] for r in failed)
    assert statuses(root)["maxrl+none_s2"] == "pending"
    assert retrain(["stop", root, "--wait", "60"], env, tmp_path).returncode == 0


@pytest.mark.slow
def test_one_supervisor_per_campaign(tmp_path):
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=200)
    env = fake_env(tmp_path, step_s=0.05)
    root = launch(tmp_path, cfg, env)
    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode == 3 and "already running" in res.stderr
    # Even bypassing the CLI check, the lock refuses a second supervisor.
    res = subprocess.run([PY, "-m", "retrain_core.supervisor.daemon", str(root)], env=env,
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 3 and "already running" in res.stderr
    assert retrain(["stop", root, "--wait", "60"], env, tmp_path).returncode == 0
