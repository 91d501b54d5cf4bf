"""The node→head copy of a run's files (supervisor/ray_stream.py), without a cluster.

Two folders stand for the node-local run folder and the head's: every test drives the
real functions the actor and the launcher call, including restarts of the head side
(a new request built only from what the head holds).
"""

from __future__ import annotations

import json
import os

from retrain_core.supervisor import ray_stream as rs


def pull(node, head, ended=False, budget=rs.MAX_BATCH_BYTES):
    record = rs.read_sync(head)
    out = rs.collect(node, rs.request_for(head, record), ended, budget)
    rs.apply(head, out["ops"], record)
    rs.write_sync(head, record)
    return out


def metrics_line(step):
    return json.dumps({"step": step, "loss": 1.0 / (step + 1)}) + "\n"


def test_lines_arrive_once_across_reconnects_and_partial_lines(tmp_path):
    node, head = tmp_path / "node", tmp_path / "head"
    node.mkdir(), head.mkdir()
    with open(node / "metrics.jsonl", "w") as f:
        f.write(metrics_line(0) + metrics_line(1)[:7])  # a line being written
        f.flush()
        pull(node, head)
        assert (head / "metrics.jsonl").read_text() == metrics_line(0)  # whole lines only
        f.write(metrics_line(1)[7:])
        for step in range(2, 50):
            f.write(metrics_line(step))
            f.flush()
            if step % 7 == 0:
                pull(node, head, budget=100)  # small batches: the rest comes next time
    # "Reconnect": a fresh head side knows only its files and .ray_sync.json.
    while not pull(node, head, ended=True, budget=300)["complete"]:
        pass
    lines = (head / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(50))


def test_rewritten_file_replaces_the_head_copy(tmp_path):
    node, head = tmp_path / "node", tmp_path / "head"
    node.mkdir(), head.mkdir()
    (node / "metrics.jsonl").write_text("".join(metrics_line(s) for s in range(6)))
    pull(node, head)
    # The trainer resumed from step 3 and trimmed its file (a new inode, like atomic_write_text).
    tmp = node / ".metrics.tmp"
    tmp.write_text("".join(metrics_line(s) for s in range(3)))
    os.replace(tmp, node / "metrics.jsonl")
    with open(node / "metrics.jsonl", "a") as f:
        f.write(metrics_line(3))
    pull(node, head, ended=True)
    assert [json.loads(x)["step"] for x in (head / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]


def test_checkpoints_arrive_whole_and_hidden_files_stay(tmp_path):
    node, head = tmp_path / "node", tmp_path / "head"
    (node / "checkpoints" / "step_2").mkdir(parents=True)
    head.mkdir()
    (node / "checkpoints" / "step_2" / "adapter_model.safetensors").write_bytes(b"A" * 1000)
    (node / "checkpoints" / "step_2" / "trainer_state.json").write_text('{"step": 2}')
    (node / "checkpoints" / ".step_4.tmp123").mkdir()  # a checkpoint being written
    (node / "checkpoints" / ".step_4.tmp123" / "adapter_model.safetensors").write_bytes(b"B")
    (node / "exit.json").write_text('{"attempt": 1, "returncode": 0}')
    pull(node, head, ended=True)
    assert (head / "checkpoints" / "step_2" / "adapter_model.safetensors").read_bytes() == b"A" * 1000
    assert not (head / "checkpoints" / ".step_4.tmp123").exists()
    assert json.loads((head / "exit.json").read_text())["returncode"] == 0
    # Unchanged files are not sent again.
    assert pull(node, head, ended=True)["ops"] == []


def test_seed_has_the_newest_checkpoint_and_no_old_attempt_logs(tmp_path):
    root = tmp_path / "campaign"
    run = root / "runs" / "r1"
    for step in (2, 10, 4):
        (run / "checkpoints" / f"step_{step}").mkdir(parents=True)
        (run / "checkpoints" / f"step_{step}" / "trainer_state.json").write_text(str(step))
    (run / "config.toml").write_text("[logging]\nlog_dir = '/head/path'\n[backend]\nthrottle_dir = '/head/t'\n")
    (run / "stdout.attempt1.log").write_text("old\n")
    (run / "metrics.jsonl").write_text(metrics_line(0))
    (root / "data").mkdir()
    (root / "data" / "train.jsonl").write_text("{}\n")
    payload = rs.seed_payload(root, run)
    assert sorted(payload) == ["data/train.jsonl", "runs/r1/checkpoints/step_10/trainer_state.json",
                               "runs/r1/config.toml", "runs/r1/metrics.jsonl"]
    local = tmp_path / "node" / "campaign"
    rs.write_seed(local, payload)
    rs.localize_config(local / "runs/r1/config.toml", local / "runs/r1", local / "throttle")
    text = (local / "runs/r1/config.toml").read_text()
    assert str(local / "runs/r1") in text and str(local / "throttle") in text and "/head/" not in text


def test_a_path_outside_the_run_folder_is_refused(tmp_path):
    head = tmp_path / "head"
    head.mkdir()
    try:
        rs.apply(head, [["whole", "../evil", "0:0", b"x"]], rs.read_sync(head))
    except ValueError as exc:
        assert "outside the run folder" in str(exc)
    else:
        raise AssertionError("a path escaping the run folder was written")
    assert not (tmp_path / "evil").exists()


def test_an_unknown_launcher_is_a_config_problem_with_its_line(tmp_path):
    from retrain_core.config import ConfigError, load_campaign

    path = tmp_path / "c.toml"
    path.write_text('[campaign]\nseeds = [1]\nlauncher = "slurm"\n')
    try:
        load_campaign(path)
    except ConfigError as exc:
        (problem,) = [p for p in exc.problems if p.key == "campaign.launcher"]
        assert problem.line == 3 and '"local", "ray"' in problem.message
    else:
        raise AssertionError("launcher = 'slurm' was accepted")


def test_lost_nodes_do_not_trip_the_circuit_breaker(tmp_path):
    """Three runs lost with one machine fail with the same line: still not the runs' fault,
    so launching goes on and their retries can start elsewhere."""
    import sys

    sys.path.insert(0, str(os.path.dirname(__file__)))
    from test_sup_helpers import write_campaign

    from retrain_core.config import load_campaign
    from retrain_core.supervisor.campdir import create_campaign_dir
    from retrain_core.supervisor.daemon import Supervisor
    from retrain_core.supervisor.launcher import ExitInfo, LocalLauncher

    root = create_campaign_dir(load_campaign(write_campaign(tmp_path, seeds=(1, 2, 3), conditions=1,
                                                            max_retries=1)), tmp_path / "logs")
    sup = Supervisor(root, launcher=LocalLauncher())
    for name in sup.order:
        sup.on_exit(name, ExitInfo(None, None, 0.0, False, "node lost: gpu2 (node 0123) left the Ray cluster"))
    assert not sup.state["supervisor"]["paused"], sup.state["supervisor"]["pause_reason"]
    for name in sup.order:
        r = sup.run_state(name)
        assert r["status"] == "pending" and r["retries"] == 1
        assert r["error"].startswith("node lost: gpu2")


def test_files_the_head_writes_are_never_overwritten_by_a_node(tmp_path):
    """events.jsonl (the supervisor's rule/stall log) and placement.json live on the head."""
    root, node = tmp_path / "campaign", tmp_path / "node"
    head = root / "runs" / "r1"
    head.mkdir(parents=True)
    (head / "events.jsonl").write_text('{"event": "stalled"}\n')
    (head / "placement.json").write_text('{"attempt": 1}')
    payload = rs.seed_payload(root, head)
    assert "runs/r1/events.jsonl" not in payload and "runs/r1/placement.json" not in payload
    node.mkdir()
    (node / "events.jsonl").write_text("")  # even a node-side file of that name
    (node / "best").mkdir()
    (node / "best" / "trainer_state.json").write_text('{"step": 3}')
    with open(head / "events.jsonl", "a") as f:
        f.write('{"event": "rule"}\n')
    pull(node, head, ended=True)
    assert len((head / "events.jsonl").read_text().splitlines()) == 2
    assert json.loads((head / "placement.json").read_text()) == {"attempt": 1}
    assert (head / "best" / "trainer_state.json").exists()  # best/ arrives as one folder
