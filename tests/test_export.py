"""`retrain export` (Prometheus /metrics, JSON /v1/runs on 127.0.0.1) and `retrain status
--watch`, as real subprocesses on a fabricated campaign."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from waits import ceiling

from tests.support.campaigns import make_campaign, write_json

REPO = Path(__file__).resolve().parent.parent
RUNS = {"grpo+none_s42": 12, "grpo+none_s101": 30, "maxrl+gtpo_sepa_s42": 5, "maxrl+gtpo_sepa_s101": 0}


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


@pytest.fixture
def campaign(tmp_path: Path):
    """A campaign with one run 'running' as a real process (a sleeper) and flagged stalled."""
    directory = make_campaign(tmp_path / "logs", steps=RUNS,
                              statuses={"grpo+none_s42": "running", "grpo+none_s101": "succeeded",
                                        "maxrl+gtpo_sepa_s42": "failed"})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    state = json.loads((directory / "state.json").read_text())
    state["runs"]["grpo+none_s42"].update(pid=sleeper.pid,
                                          proc_start_time=psutil.Process(sleeper.pid).create_time(),
                                          stalled={"since": 1.0, "idle_s": 400.0, "bound_s": 300.0})
    write_json(directory / "state.json", state)
    write_json(directory / "runs" / "grpo+none_s101" / "best" / "trainer_state.json",
               {"step": 20, "best": {"step": 19, "mode": "greedy", "correct_rate": 0.625}})
    yield directory
    sleeper.kill()
    sleeper.wait(30)


@pytest.fixture
def exporter(campaign):
    proc = subprocess.Popen([sys.executable, "-m", "retrain_core.cli", "export", str(campaign),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
    assert match, line + proc.stderr.read()
    yield f"http://127.0.0.1:{match.group(1)}", proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=ceiling(30)) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'(\w+)\{(.*)\} (\S+)', line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def test_metrics_and_runs_endpoints(campaign, exporter) -> None:
    base, proc = exporter
    status, ctype, text = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(text)
    camp = campaign.name

    def value(name, **labels):
        want = {(k, str(v)) for k, v in labels.items()}
        hits = [v for (n, ls), v in samples.items() if n == name and want <= ls]
        assert len(hits) == 1, (name, labels, hits)
        return hits[0]

    for run, steps in RUNS.items():
        assert value("retrain_run_step", campaign=camp, run=run) == steps
    assert value("retrain_run_info", run="grpo+none_s42", status="running", condition="grpo+none") == 1
    assert value("retrain_run_stalled", run="grpo+none_s42") == 1
    assert value("retrain_run_stalled", run="grpo+none_s101") == 0
    last = json.loads((campaign / "runs" / "grpo+none_s42" / "metrics.jsonl").read_text().splitlines()[-1])
    assert value("retrain_run_mean_reward", run="grpo+none_s42") == pytest.approx(last["mean_reward"])
    assert value("retrain_campaign_runs", campaign=camp, status="pending") == 1
    assert value("retrain_supervisor_up", campaign=camp) == 0
    assert value("retrain_run_rss_bytes", run="grpo+none_s42") > 1_000_000  # the sleeper's RSS
    assert "# TYPE retrain_run_step gauge" in text

    status, ctype, body = get(base + "/v1/runs")
    assert status == 200 and ctype == "application/json"
    runs = {r["name"]: r for r in json.loads(body)["campaigns"][0]["runs"]}
    assert runs["grpo+none_s42"]["stalled"]["bound_s"] == 300.0 and runs["grpo+none_s101"]["step"] == 30
    assert runs["grpo+none_s101"]["best"]["correct_rate"] == 0.625 and runs["grpo+none_s42"]["best"] is None

    assert get(base + "/nope")[0] == 404
    request = urllib.request.Request(base + "/v1/runs", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=ceiling(30))
    assert info.value.code == 405

    proc.send_signal(signal.SIGINT)
    assert proc.wait(ceiling(30)) == 0


def test_port_in_use_is_explained(campaign) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "retrain_core.cli", "export", str(campaign),
                              "--port", str(port)], capture_output=True, text=True, env=env(),
                             timeout=ceiling(60), check=False)
    assert res.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr


def test_status_watch_prints_refreshes(campaign) -> None:
    res = subprocess.run([sys.executable, "-m", "retrain_core.cli", "status", str(campaign),
                          "--watch", "0.2", "--count", "3", "--json"], capture_output=True,
                         text=True, env=env(), timeout=ceiling(60), check=False)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 3
    docs = [json.loads(line) for line in lines]
    assert all(d["campaigns"][0]["campaign"] == campaign.name for d in docs)
    res = subprocess.run([sys.executable, "-m", "retrain_core.cli", "status", str(campaign),
                          "--watch", "0.2", "--count", "2"], capture_output=True, text=True,
                         env=env(), timeout=ceiling(60), check=False)
    assert res.returncode == 0 and res.stdout.count("--- ") == 2
    assert "STALLED 400s (bound 300s)" in res.stdout
    assert "best=0.625@19" in res.stdout
