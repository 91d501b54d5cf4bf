"""The Tinker backend through the real SDK against a real local Tinker server (SkyRL tx).

The server tests need `.venv-tinker` (`make tinker-server`); without it they skip, unless
RETRAIN_REQUIRE_EXTRAS=1 (CI), where a missing server is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_sup_helpers import campaign_over, procs, retrain, state, wait_until  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools" / "tinker_server"))
from local_server import LocalTinkerServer, server_available

pytestmark = [pytest.mark.slow, pytest.mark.tinker, pytest.mark.usefixtures("procs")]


def _need_server() -> None:
    reason = server_available()
    try:
        import tinker  # noqa: F401
    except ImportError:
        reason = reason or "the Tinker SDK is not installed (pip install -e .[tinker])"
    if reason:
        if os.environ.get("RETRAIN_REQUIRE_EXTRAS") == "1":
            pytest.fail(f"RETRAIN_REQUIRE_EXTRAS=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _need_server()
    with LocalTinkerServer(tmp_path_factory.mktemp("tinker-server"), max_runs=4) as srv:
        yield srv


def _config(path: Path, base_url: str, *, seeds=(1,), conditions=2, max_steps=2,
            timeout_s=300, max_retries=0) -> Path:
    # A reward with variance inside every group whatever the served model writes, so each
    # step trains (the boxed-answer reward on 16 tokens would skip most groups).
    (path.parent / "parity_reward.py").write_text(
        "def score(completion, answer):\n    return float(len(completion) % 2)\n")
    conds = [("grpo", "none"), ("maxrl", "gtpo")][:conditions]
    cond_text = ",\n  ".join(f'{{ advantage_mode = "{a}", transform_mode = "{t}" }}' for a, t in conds)
    path.write_text(textwrap.dedent(f"""\
        [campaign]
        seeds = [{", ".join(map(str, seeds))}]
        max_steps = {max_steps}
        max_workers = 2
        max_retries = {max_retries}
        conditions = [
          {cond_text},
        ]

        [backend]
        backend = "tinker"
        base_url = "{base_url}"
        max_concurrent = 1
        request_timeout_s = {timeout_s}

        [model]
        model = "builtin:tiny-arith"
        lora_rank = 4

        [training]
        batch_size = 2
        group_size = 4
        max_tokens = 16
        save_every = 1

        [data]
        source = "arithmetic"

        [reward]
        type = "parity_reward.score"

        [logging]
        wandb_project = ""
        """))
    return path


def _env(base_url: str) -> dict:
    env = dict(os.environ, TINKER_API_KEY="tml-local", TINKER_BASE_URL=base_url)
    env.pop("RETRAIN_TRAINER_CMD", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_missing_api_key_is_refused_before_anything_starts(tmp_path):
    cfg = _config(tmp_path / "c.toml", "http://127.0.0.1:9")
    env = dict(os.environ)
    env.pop("TINKER_API_KEY", None)
    res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs"], env, tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "backend.backend" in res.stderr and ("TINKER_API_KEY" in res.stderr or "SDK" in res.stderr)
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_two_run_campaign_through_the_sdk_respects_the_throttle(tmp_path, server):
    cfg = _config(tmp_path / "c.toml", server.base_url)
    res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs"], _env(server.base_url), tmp_path)
    assert res.returncode == 0, res.stderr
    root = Path(res.stdout.strip().splitlines()[-1])
    wait_until(lambda: campaign_over(root), 150, what="the Tinker campaign to end")
    runs = state(root)["runs"]
    assert {name: r["status"] for name, r in runs.items()} == dict.fromkeys(runs, "succeeded"), \
        {name: r.get("error") for name, r in runs.items()}
    calls = []
    for name in runs:
        run_dir = root / "runs" / name
        steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert steps == [0, 1]
        calls += [json.loads(x) for x in (run_dir / "api_calls.jsonl").read_text().splitlines()]
    assert {c["call"] for c in calls} >= {"sample", "train"}
    # max_concurrent = 1: no two throttled calls of the campaign ever overlapped.
    events = sorted([(c["start"], 1) for c in calls] + [(c["end"], -1) for c in calls])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    assert peak == 1


def test_a_checkpoint_saved_through_the_service_resumes_the_run(tmp_path, server):
    cfg = _config(tmp_path / "c.toml", server.base_url, conditions=1)
    run_dir = tmp_path / "run"

    def run(max_steps: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "retrain_core.cli", "run", str(cfg), "--run-dir", str(run_dir),
             "--max-steps", str(max_steps)], env=_env(server.base_url), cwd=tmp_path,
            capture_output=True, text=True, timeout=900, check=False)

    first = run(1)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = json.loads((run_dir / "final" / "tinker_state.json").read_text())
    assert saved["state_path"].startswith("tinker://")
    second = run(2)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "at step 1" in second.stdout
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]


def test_a_server_that_dies_mid_campaign_fails_the_run_with_a_clear_error(tmp_path):
    _need_server()
    with LocalTinkerServer(tmp_path / "dying-server", max_runs=2) as srv:
        cfg = _config(tmp_path / "c.toml", srv.base_url, conditions=1, max_steps=50, timeout_s=60)
        res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs"], _env(srv.base_url), tmp_path)
        assert res.returncode == 0, res.stderr
        root = Path(res.stdout.strip().splitlines()[-1])
        run_dir = root / "runs" / "grpo+none_s1"
        # from here each call waits at most 60 s, so the run must fail within a few minutes
        metrics = run_dir / "metrics.jsonl"
        wait_until(lambda: metrics.exists() and metrics.read_text().strip(), 150, what="a first step")
        srv.stop()
    wait_until(lambda: campaign_over(root), 150, what="the run to fail, not hang")
    run = state(root)["runs"]["grpo+none_s1"]
    assert run["status"] == "failed"
    stderr = (run_dir / "stderr.log").read_text()
    assert "Tinker call" in stderr and srv.base_url in stderr
