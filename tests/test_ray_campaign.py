"""Campaigns on a real local multi-node Ray cluster (`[campaign] launcher = "ray"`).

One `ray.cluster_utils.Cluster` per module: a head without GPUs and two worker nodes that
declare 2 GPUs each. Every node has its own node-local folder (the runs' folders live under
`$RETRAIN_RAY_NODE_DIR/<node id>/`, never in the campaign folder), so what the tests read on
the head came through the streaming path. The supervisor is the real detached process
started by `retrain campaign`; runs are the stand-in trainer of test_sup_helpers (FAKE_*
knobs reach the nodes through RETRAIN_RAY_ENV) except for one real tiny-model run.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from test_sup_helpers import (
    campaign_over,
    fake_env,
    kill_pid,
    launch,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    retrain,
    run_processes,
    state,
    wait_until,
    write_campaign,
)

from retrain_core.supervisor.api import supervisor_alive

try:
    import ray  # noqa: F401
    from ray.cluster_utils import Cluster
except ImportError:
    if os.environ.get("RETRAIN_REQUIRE_EXTRAS") == "1":
        raise  # CI installs the extra: a missing Ray is a failure there
    pytest.skip("ray is not installed (pip install -e '.[ray]'); RETRAIN_REQUIRE_EXTRAS=1 makes "
                "this a failure", allow_module_level=True)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("procs")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes_dir = tmp_path_factory.mktemp("ray_nodes")
    saved = os.environ.get("RETRAIN_RAY_NODE_DIR")
    os.environ["RETRAIN_RAY_NODE_DIR"] = str(nodes_dir)  # raylets and their workers inherit it
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    for _ in range(2):
        c.add_node(num_cpus=1, num_gpus=2)
    c.wait_for_nodes()
    c.nodes_dir = nodes_dir
    try:
        yield c
    finally:
        c.shutdown()
        if saved is None:
            os.environ.pop("RETRAIN_RAY_NODE_DIR", None)
        else:
            os.environ["RETRAIN_RAY_NODE_DIR"] = saved


def ray_campaign(tmp_path: Path, cluster, *, grace=5.0, **kwargs) -> Path:
    path = write_campaign(tmp_path, **kwargs)
    text = path.read_text().replace(
        "[campaign]\n", f'[campaign]\nlauncher = "ray"\nray_address = "{cluster.address}"\n'
                        f"grace_seconds = {grace}\n", 1)
    path.write_text(text.replace('devices = "cpu"', 'devices = "auto"'))
    return path


def ray_env(tmp_path: Path, **fake) -> dict:
    env = fake_env(tmp_path, **fake)
    env["RETRAIN_RAY_ENV"] = "FAKE_*"
    env.pop("RAY_ADDRESS", None)
    return env


def placement(root: Path, run: str) -> dict:
    return json.loads((root / "runs" / run / "placement.json").read_text())


def placed(root: Path, run: str, attempt: int = 1) -> dict | None:
    try:
        p = placement(root, run)
    except (OSError, ValueError):
        return None
    return p if p.get("attempt") == attempt else None


def steps(run_dir: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def latest_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def supervisor_pid(root: Path) -> int:
    return json.loads((root / "supervisor.pid").read_text())["pid"]


@pytest.mark.timeout(600)
def test_four_runs_spread_over_the_gpus_every_metrics_line_once_on_the_head(tmp_path, cluster):
    gate = tmp_path / "gate"
    env = ray_env(tmp_path, STEP_S=0.05, GATE=gate)
    root = launch(tmp_path, ray_campaign(tmp_path, cluster, parallel=True, max_steps=6), env)
    names = list(state(root)["runs"])
    # All four held before their last step: each has its own GPU of the four declared.
    where = wait_until(lambda: all(placed(root, n) for n in names) and
                       [placed(root, n) for n in names], 120, what="all four runs on a node")
    gate.touch()
    wait_until(lambda: campaign_over(root), 120, what="the campaign to end")
    st = state(root)
    assert {n: r["status"] for n, r in st["runs"].items()} == dict.fromkeys(names, "succeeded"), st
    pairs = {(p["node_id"], p["cuda_visible_devices"]) for p in where}
    assert len(pairs) == 4 and {p["cuda_visible_devices"] for p in where} == {"0", "1"}
    assert len({p["node_id"] for p in where}) == 2
    for name, p in zip(names, where):
        run_dir = root / "runs" / name
        local = Path(p["local_dir"])
        assert local.is_relative_to(cluster.nodes_dir) and p["node_id"][:12] in local.parts
        assert steps(run_dir) == list(range(6)), name  # every line exactly once
        assert (run_dir / "metrics.jsonl").read_bytes() == (local / "metrics.jsonl").read_bytes()
        assert json.loads((run_dir / "exit.json").read_text())["returncode"] == 0
        assert (run_dir / "checkpoints" / "final" / "adapter_config.json").exists()  # copied back
        assert len((run_dir / "completions.log").read_text().splitlines()) == 1
    assert "runs on" in (root / "supervisor.log").read_text()


@pytest.mark.timeout(600)
def test_retrain_kill_ends_the_whole_tree_on_its_node(tmp_path, cluster):
    gate = tmp_path / "gate-never"
    env = ray_env(tmp_path, SPAWN=1, GATE=gate, GATE_STEP=1)
    root = launch(tmp_path, ray_campaign(tmp_path, cluster, seeds=(1,), conditions=1,
                                         max_steps=4, grace=15.0), env)
    run = next(iter(state(root)["runs"]))
    run_dir = root / "runs" / run
    wait_until(lambda: (run_dir / "fake_children.json").exists(), 120,
               what="the stand-in's children, reported through the stream")
    tree = run_processes(root.name)
    assert len(tree) >= 6  # wrapper, trainer, 3 children, the escaped grandchild
    res = retrain(["kill", root, run, "--wait", "240"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert state(root)["runs"][run]["status"] == "killed"
    wait_until(lambda: not run_processes(root.name), 30, what="every process of the run to end")
    assert all(not p.is_running() or p.status() == "zombie" for p in tree)
    # The trainer got SIGTERM first and checkpointed: exit 75 came back to the head (the
    # grace is long enough on a loaded box; the child that ignores SIGTERM waits it out).
    end = json.loads((run_dir / "exit.json").read_text())
    assert end["returncode"] == 75 and end["sigterm_received"], end


@pytest.mark.timeout(600)
def test_supervisor_sigkill_and_resume_reattaches_without_restarting(tmp_path, cluster):
    gate = tmp_path / "gate"
    env = ray_env(tmp_path, STEP_S=0.05, GATE=gate, GATE_STEP=3)
    root = launch(tmp_path, ray_campaign(tmp_path, cluster, seeds=(1, 2), conditions=1,
                                         parallel=True, max_steps=6), env)
    names = list(state(root)["runs"])
    wait_until(lambda: all(placed(root, n) and (root / "runs" / n / "metrics.jsonl").exists()
                           and len(steps(root / "runs" / n)) == 3 for n in names), 120,
               what="both runs held at step 3 with their metrics on the head")
    kill_pid(supervisor_pid(root))
    wait_until(lambda: not supervisor_alive(root), 30, what="the supervisor to die")
    gate.touch()  # the runs finish while no supervisor watches: the new one must catch up
    res = retrain(["campaign", "--resume", root], env, tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    wait_until(lambda: campaign_over(root), 120, what="the campaign to end after resume")
    st = state(root)
    log = (root / "supervisor.log").read_text()
    for name in names:
        r = st["runs"][name]
        assert r["status"] == "succeeded" and r["attempt"] == 1, (name, r)
        assert f"{name}: adopted running attempt 1" in log
        assert steps(root / "runs" / name) == list(range(6))  # no gap, no duplicate
        assert len((root / "runs" / name / "starts.log").read_text().splitlines()) == 1


@pytest.mark.timeout(600)
def test_a_real_tiny_run_completes_on_a_node(tmp_path, cluster):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(textwrap.dedent(f"""\
        [campaign]
        launcher = "ray"
        ray_address = "{cluster.address}"
        seeds = [1]
        max_steps = 2
        conditions = [{{ advantage_mode = "grpo", transform_mode = "none" }}]

        [backend]
        devices = "cpu"
        max_concurrent = 1

        [model]
        model = "builtin:tiny-arith"
        lora_rank = 4

        [training]
        batch_size = 2
        group_size = 2
        max_tokens = 8
        save_every = 1

        [data]
        source = "arithmetic"
        """))
    env = dict(os.environ)
    env.pop("RETRAIN_TRAINER_CMD", None)
    env.pop("RAY_ADDRESS", None)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 150, interval=0.5, what="the tiny run")
    (name, r), = state(root)["runs"].items()
    assert r["status"] == "succeeded", r["error"]
    run_dir = root / "runs" / name
    assert steps(run_dir) == [0, 1]
    assert (run_dir / "final" / "adapter_model.safetensors").exists()
    assert Path(placement(root, name)["local_dir"]) != run_dir


@pytest.mark.timeout(600)
def test_a_lost_node_fails_its_run_which_retries_elsewhere_from_the_copied_checkpoint(
        tmp_path, cluster):
    gate = tmp_path / "gate"
    env = ray_env(tmp_path, STEP_S=0.05, GATE=gate, GATE_STEP=6)
    root = launch(tmp_path, ray_campaign(tmp_path, cluster, seeds=(1,), conditions=1,
                                         max_steps=8, max_retries=1), env)
    run = next(iter(state(root)["runs"]))
    run_dir = root / "runs" / run
    wait_until(lambda: placed(root, run) and latest_step(run_dir) == 6, 120,
               what="the checkpoint of step 6 copied to the head")
    lost = placed(root, run)["node_id"]
    node = next(n for n in cluster.worker_nodes if n.node_id == lost)
    cluster.remove_node(node)
    try:
        second = wait_until(lambda: placed(root, run, attempt=2), 120, what="the retry on a node")
        assert second["node_id"] != lost
        assert "node lost" in (root / "supervisor.log").read_text()
        gate.touch()
        wait_until(lambda: campaign_over(root), 120, what="the retried run to end")
        r = state(root)["runs"][run]
        assert r["status"] == "succeeded" and r["attempt"] == 2 and r["retries"] == 1, r
        starts = [line.split()[1] for line in (run_dir / "starts.log").read_text().splitlines()]
        assert starts == ["0", "6"]  # the retry resumed from the checkpoint copied to the head
    finally:
        cluster.add_node(num_cpus=1, num_gpus=2)  # the next test gets the full cluster back


def test_launch_is_refused_when_the_cluster_cannot_be_reached(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_campaign(tmp_path, seeds=(1,), conditions=1)
    cfg.write_text(cfg.read_text().replace(
        "[campaign]\n", f'[campaign]\nlauncher = "ray"\nray_address = "127.0.0.1:{port}"\n', 1))
    res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs"], ray_env(tmp_path), tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "c.toml:2: campaign.launcher" in res.stderr
    assert f"cannot reach the Ray cluster at '127.0.0.1:{port}'" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "logs").exists()
