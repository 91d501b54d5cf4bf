"""Stalls, rules and webhook events applied by a real supervisor to stand-in runs.

The stand-in trainer here writes one metrics row per step with a per-run correct_rate
(`WATCH_RATES`, JSON run -> rate), and hangs before step `WATCH_HANG_AT` until the file
`WATCH_GATE` exists (a hung run that a test can release). The stall floor is lowered with
RETRAIN_STALL_FLOOR_S so a test waits seconds, not minutes.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from test_sup_helpers import (  # noqa: F401  (procs: a fixture that kills leftovers at teardown)
    PY,
    campaign_over,
    fake_env,
    launch,
    procs,
    retrain,
    state,
    write_campaign,
)
from waits import wait_until

from retrain_core.supervisor.stalls import Progress, check_stall, stall_bound

SUPERVISED = pytest.mark.usefixtures("procs")

STAND_IN = r'''
import json, os, signal, sys, time, tomllib
from pathlib import Path
config, _, run_dir, _, name, _, label = sys.argv[1:8]
run_dir = Path(run_dir)
steps = tomllib.loads(Path(config).read_text())["training"]["max_steps"]
step_s = float(os.environ.get("WATCH_STEP_S", "0.1"))
rate = json.loads(os.environ.get("WATCH_RATES", "{}")).get(name, 0.5)
hang_at = int(os.environ.get("WATCH_HANG_AT", "-1"))
gate = os.environ.get("WATCH_GATE", "")
hang_runs = os.environ.get("WATCH_HANG_RUNS", "*")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
with open(run_dir / "starts.log", "a") as f:
    f.write(f"{os.getpid()}\n")
attempt = len((run_dir / "starts.log").read_text().splitlines())
for step in range(steps):
    while (step == hang_at and attempt == 1 and hang_runs in ("*", name)
           and not (gate and os.path.exists(gate))):
        time.sleep(0.05)
    time.sleep(step_s)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "correct_rate": rate, "mean_reward": rate,
                            "step_time_s": step_s, "time": time.time()}) + "\n")
'''


def stand_in_env(tmp_path: Path, **watch) -> dict:
    env = fake_env(tmp_path)
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    env["RETRAIN_TRAINER_CMD"] = f"{PY} {script}"
    for key, value in watch.items():
        env[f"WATCH_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def with_extra(config: Path, extra: str = "") -> Path:
    """Insert campaign keys and tables (on_stall, rules, notify) before [backend]; the data
    source is one that needs no optional package (the stand-in never reads it anyway)."""
    text = config.read_text().replace("[backend]", extra.strip() + "\n\n[backend]", 1)
    config.write_text(text + '\n[data]\nsource = "arithmetic"\n')
    return config


def events(root: Path, run: str) -> list[dict]:
    path = root / "runs" / run / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- units -----------------------------------------------------------------------------
def test_bound_is_max_of_floor_and_five_median_steps() -> None:
    assert stall_bound([], 300) == 300
    assert stall_bound([1.0, 2.0, 100.0], 300) == 300
    assert stall_bound([100.0, 120.0, 90.0], 300) == 500


def test_check_stall_uses_metrics_then_log_life_signs(tmp_path: Path) -> None:
    launched = time.time() - 100
    progress = Progress()
    # no metrics and no logs since launch: idle 100 s > 50 s
    assert check_stall(tmp_path, progress, launched, time.time(), 50)["bound_s"] == 50
    (tmp_path / "stderr.log").write_text("Downloading model… 40%")  # a sign of life
    assert check_stall(tmp_path, progress, launched, time.time(), 50) is None
    # once metrics of this attempt exist, only they count
    progress.mtime, progress.rows = time.time() - 80, [{"step": 0, "step_time_s": 1.0}]
    assert check_stall(tmp_path, progress, launched, time.time(), 50)["idle_s"] >= 80


# -- a real supervisor -----------------------------------------------------------------
@SUPERVISED
def test_hung_run_is_flagged_within_the_bound_then_clears(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RETRAIN_STALL_FLOOR_S", "3")
    gate = tmp_path / "release"
    env = stand_in_env(tmp_path, hang_at="3", gate=str(gate), step_s="0.1")
    env["RETRAIN_STALL_FLOOR_S"] = "3"
    config = with_extra(write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=40))
    root = launch(tmp_path, config, env)
    run = "grpo+none_s1"
    metrics = root / "runs" / run / "metrics.jsonl"
    wait_until(lambda: metrics.exists() and len(metrics.read_text().splitlines()) == 3, 60,
               what="three steps, then the hang")
    last_write = metrics.stat().st_mtime
    st = wait_until(lambda: state(root)["runs"][run].get("stalled") and state(root), 60,
                    what="the run flagged stalled")
    stalled = st["runs"][run]["stalled"]
    assert stalled["bound_s"] == 3.0                      # max(3 s floor, 5 × 0.1 s)
    assert stalled["since"] == pytest.approx(last_write + 3.0, abs=0.05)
    # flagged after the bound, and promptly (the supervisor looks once a second)
    flagged_at = time.time()
    assert flagged_at - last_write >= 3.0
    assert st["runs"][run]["status"] == "running"
    assert [e["event"] for e in events(root, run)] == ["stalled"]
    from retrain_core.supervisor.cli_status import campaign_summary
    assert campaign_summary(root)["runs"][0]["stalled"]["bound_s"] == 3.0

    gate.touch()  # the hang ends: the flag clears while it runs on, then it finishes
    wait_until(lambda: "stalled" not in state(root)["runs"][run], 60, what="the flag to clear")
    assert state(root)["runs"][run]["status"] == "running"
    wait_until(lambda: campaign_over(root), 60, what="the campaign to finish")
    final = state(root)["runs"][run]
    assert final["status"] == "succeeded" and "stalled" not in final
    assert [e["event"] for e in events(root, run)] == ["stalled", "stall_cleared"]


@SUPERVISED
def test_on_stall_restart_restarts_the_hung_run(tmp_path: Path) -> None:
    env = stand_in_env(tmp_path, hang_at="2", step_s="0.1")  # hangs on attempt 1 only
    env["RETRAIN_STALL_FLOOR_S"] = "2"
    config = with_extra(write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=4),
                        'on_stall = "restart"')
    root = launch(tmp_path, config, env)
    wait_until(lambda: campaign_over(root), 90, what="the campaign to finish")
    run = state(root)["runs"]["grpo+none_s1"]
    assert run["status"] == "succeeded" and run["attempt"] == 2 and run["stall_restarts"] == 1
    assert [e["event"] for e in events(root, "grpo+none_s1")][:2] == ["stalled", "restarted_on_stall"]


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", Hook.received
    server.shutdown()
    server.server_close()


@SUPERVISED
def test_rule_kills_only_the_run_that_crosses_and_webhook_gets_events(tmp_path: Path, webhook) -> None:
    url, received = webhook
    low, ok = "grpo+none_s1", "maxrl+none_s1"
    env = stand_in_env(tmp_path, rates={low: 0.01, ok: 0.5}, step_s="0.3")
    config = with_extra(write_campaign(tmp_path, seeds=(1,), conditions=2, max_steps=12, parallel=True),
                        f'''
[[campaign.rules]]
name = "hopeless"
when = "step >= 2 and correct_rate < 0.05"
action = "kill"

[notify]
webhook = "{url}"''')
    root = launch(tmp_path, config, env)
    wait_until(lambda: campaign_over(root), 120, what="the campaign to finish")
    runs = state(root)["runs"]
    assert runs[low]["status"] == "killed" and runs[ok]["status"] == "succeeded"
    fired = runs[low]["rules_fired"]
    assert [(f["rule"], f["name"], f["action"]) for f in fired] == [(0, "hopeless", "kill")]
    assert fired[0]["step"] >= 2
    assert "killed by rule 1 (hopeless)" in runs[low]["error"]
    assert "rules_fired" not in runs[ok]
    steps_done = len((root / "runs" / low / "metrics.jsonl").read_text().splitlines())
    assert steps_done < 12  # it was stopped early
    assert [e["event"] for e in events(root, low)] == ["rule_fired"]

    # the webhook got the rule, both endings and the campaign's end (delivered before exit)
    wait_until(lambda: any(e["event"] == "campaign_finished" for e in received), 30,
               what="the campaign_finished event")
    kinds = {(e["event"], e["run"]) for e in received}
    assert {("rule_fired", low), ("run_killed", low), ("run_succeeded", ok),
            ("campaign_finished", None)} <= kinds
    assert all(e["campaign"] == root.name for e in received)


@SUPERVISED
def test_pause_rule_stops_launching_until_unpaused(tmp_path: Path) -> None:
    # Each run holds before its step 2 until the gate exists, so the rule (true from step 1)
    # is seen while the run is alive however slowly the supervisor ticks on a loaded box.
    gate = tmp_path / "gate"
    env = stand_in_env(tmp_path, step_s="0.2", hang_at="2", gate=str(gate))
    config = with_extra(write_campaign(tmp_path, seeds=(1, 2), conditions=1, max_steps=4), '''
[[campaign.rules]]
when = "step >= 1 and attempt == 1"
action = "pause"''')
    root = launch(tmp_path, config, env)
    first, second = "grpo+none_s1", "grpo+none_s2"
    wait_until(lambda: state(root)["supervisor"]["paused"], 60, what="the pause rule to fire")
    gate.touch()
    sup = state(root)["supervisor"]
    assert "rule 1: step >= 1 and attempt == 1" in sup["pause_reason"] and first in sup["pause_reason"]
    wait_until(lambda: state(root)["runs"][first]["status"] == "succeeded", 60,
               what="the running run to finish (a pause only stops launching)")
    time.sleep(2)  # the supervisor ticks 20 times meanwhile: it must not launch the next run
    assert state(root)["runs"][second]["status"] == "pending"
    gate.unlink()  # the second run holds at its step 2 too, until the rule has paused again
    assert retrain(["unpause", root], env, tmp_path).returncode == 0
    wait_until(lambda: state(root)["runs"][second].get("rules_fired"), 60,
               what="the rule to fire for the second run")
    gate.touch()
    wait_until(lambda: campaign_over(root), 60, what="the campaign to finish after unpause")
    runs = state(root)["runs"]
    assert runs[second]["status"] == "succeeded"
    # the second run fired the rule too (once), pausing again after it launched
    assert [f["action"] for f in runs[second]["rules_fired"]] == ["pause"]


@SUPERVISED
def test_a_run_queued_for_a_throttle_slot_is_not_stalled(tmp_path: Path) -> None:
    from retrain_core.throttle import open_throttle

    # the shared stand-in takes a throttle slot around each step; it waits at a gate before
    # step 1 until the test holds the only slot, then queues behind it
    gate = tmp_path / "go"
    env = fake_env(tmp_path, step_s="0.1", gate=gate, gate_step="1")
    env["RETRAIN_STALL_FLOOR_S"] = "2"
    config = with_extra(write_campaign(tmp_path, seeds=(1,), conditions=1, max_steps=3,
                                       max_concurrent=1))
    root = launch(tmp_path, config, env)
    run = "grpo+none_s1"
    metrics = root / "runs" / run / "metrics.jsonl"
    wait_until(lambda: metrics.exists() and metrics.read_text().strip(), 60, what="step 0")
    slot = open_throttle(str(root / "throttle"), 1, "someone-else")
    with slot:
        gate.touch()
        time.sleep(5)  # > the 2 s bound, twice over: queued, not hung
        st = state(root)["runs"][run]
        assert st["status"] == "running" and "stalled" not in st
    wait_until(lambda: campaign_over(root), 60, what="the run to finish once the slot is free")
    assert state(root)["runs"][run]["status"] == "succeeded"
    slot.close()
