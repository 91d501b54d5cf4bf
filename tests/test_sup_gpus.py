"""GPU placement: a pool of GPUs, a disjoint share per live run, runs queued while it is full.

The pool is an explicit list (`cuda:0,1,2,3`), which is trusted as given, so this works on
a CPU-only box: the stand-in trainer touches no GPU, it records the environment the
supervisor gave it and waits until the expected number of runs are live at once.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from retrain_core import gpus
from retrain_core.plan import campaign_parallelism, parallelism
from tests.test_sup_helpers import (  # noqa: F401  (procs: fixture killing leftovers)
    PY,
    campaign_over,
    fake_env,
    launch,
    procs,
    retrain,
    state,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("procs")

# Records CUDA_VISIBLE_DEVICES, then stays alive until BARRIER runs have started (or 60 s),
# so the live set reaches its peak; checks state.json while it is live.
STAND_IN = r'''
import json, os, sys, time
from pathlib import Path
run_dir = Path(sys.argv[sys.argv.index("--run-dir") + 1])
runs = run_dir.parent
root = runs.parent
barrier = int(os.environ["BARRIER"])
rec = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "assigned": os.environ.get("RETRAIN_GPUS"),
       "pid": os.getpid(), "start": time.time()}
(run_dir / "started.json").write_text(json.dumps(rec))
deadline = time.time() + 60
snapshots = []
while time.time() < deadline and len(list(runs.glob("*/started.json"))) < barrier:
    time.sleep(0.05)
for _ in range(3):  # what the supervisor says while this run is live
    try:
        snapshots.append(json.loads((root / "state.json").read_text())["runs"])
    except (OSError, ValueError):
        pass
    time.sleep(0.05)
rec["end"] = time.time()
rec["snapshots"] = snapshots
(run_dir / "env.json").write_text(json.dumps(rec))
'''


def _campaign(tmp_path: Path, gpus_per_run: int, devices: str = "cuda:0,1,2,3") -> Path:
    path = tmp_path / "gpu.toml"
    path.write_text(textwrap.dedent(f"""\
        [campaign]
        seeds = [1, 2, 3]
        max_steps = 2
        parallel = true
        max_workers = 8
        gpus_per_run = {gpus_per_run}
        conditions = [
          {{ advantage_mode = "grpo", transform_mode = "none" }},
          {{ advantage_mode = "maxrl", transform_mode = "none" }},
        ]

        [backend]
        devices = "{devices}"

        [model]
        model = "builtin:tiny-arith"
        """))
    return path


def _run(tmp_path: Path, gpus_per_run: int) -> tuple[Path, list[dict]]:
    cfg = _campaign(tmp_path, gpus_per_run)
    env = fake_env(tmp_path)
    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    env["RETRAIN_TRAINER_CMD"] = f"{PY} {stand_in}"
    env["BARRIER"] = str(4 // gpus_per_run)
    root = launch(tmp_path, cfg, env)
    wait_until(lambda: campaign_over(root), 120, what="campaign end")
    runs = state(root)["runs"]
    assert {r["status"] for r in runs.values()} == {"succeeded"}, runs
    records = []
    for name in runs:
        rec = json.loads((root / "runs" / name / "env.json").read_text())
        records.append({**rec, "name": name, "state_gpus": runs[name]["gpus"]})
    return root, records


def _check_disjoint(records: list[dict], per_run: int, peak: int) -> None:
    for rec in records:
        share = [int(g) for g in rec["visible"].split(",")]
        assert len(share) == per_run and set(share) <= {0, 1, 2, 3}, rec
        assert rec["assigned"] == rec["visible"], rec
        assert rec["state_gpus"] == share, rec  # state.json records what the child got
    # From each child's environment: runs alive at the same time never share a GPU.
    most = 0
    for rec in records:
        live = [r for r in records if r["start"] <= rec["start"] < r["end"]]
        most = max(most, len(live))
        held = [g for r in live for g in r["visible"].split(",")]
        assert len(held) == len(set(held)), live
    assert most == peak, records
    # From state.json, as seen by every live child: same rule, same bound.
    for rec in records:
        for snap in rec["snapshots"]:
            running = [r for r in snap.values() if r["status"] == "running"]
            assert len(running) <= peak, snap
            held = [g for r in running for g in r["gpus"]]
            assert len(held) == len(set(held)), snap


@pytest.mark.slow
def test_pool_of_four_one_gpu_per_run_runs_four_at_once(tmp_path):
    root, records = _run(tmp_path, gpus_per_run=1)
    _check_disjoint(records, per_run=1, peak=4)
    assert state(root)["supervisor"]["gpu_pool"] == [0, 1, 2, 3]
    manifest = json.loads((root / "manifest.json").read_text())
    width = campaign_parallelism(manifest, state(root), 6)
    assert (width.runs_at_once, width.bound) == (4, "GPUs")


@pytest.mark.slow
def test_two_gpus_per_run_runs_two_at_once(tmp_path):
    _, records = _run(tmp_path, gpus_per_run=2)
    _check_disjoint(records, per_run=2, peak=2)


def test_explain_reports_the_gpu_bound(tmp_path):
    for per_run, expected in ((1, 4), (2, 2)):
        res = retrain(["explain", _campaign(tmp_path, per_run), "--json"], fake_env(tmp_path), tmp_path)
        assert res.returncode == 0, res.stderr
        est = json.loads(res.stdout)["estimate"]
        assert (est["effective_parallelism"], est["parallelism_bound"]) == (expected, "GPUs")
        text = retrain(["explain", _campaign(tmp_path, per_run)], fake_env(tmp_path), tmp_path).stdout
        assert f"parallelism: {expected} runs at once, bound by GPUs (4 GPUs ÷ {per_run} per run)" in text
        # the TUI's plan panel shows the same figure and bound
        from retrain_core.config import load_campaign
        from retrain_core.plan import estimate
        from retrain_tui.widgets.plan_panel import plan_text

        camp = load_campaign(_campaign(tmp_path, per_run))
        panel = plan_text(camp, estimate(camp, step_time_s=1.0).to_dict())
        assert f"parallelism      {expected} (4 GPUs ÷ {per_run} per run)" in panel


def test_a_share_larger_than_the_pool_is_refused_with_its_location(tmp_path):
    cfg = _campaign(tmp_path, gpus_per_run=5)
    env = fake_env(tmp_path)
    res = retrain(["explain", cfg], env, tmp_path)
    assert "gpu.toml:6: campaign.gpus_per_run" in res.stdout, res.stdout
    res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs"], env, tmp_path)
    assert res.returncode == 2 and "gpus_per_run = 5" in res.stderr and "only 4 GPU" in res.stderr
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").glob("campaign_*"))


def test_parallelism_names_its_bound():
    assert parallelism(False, 8, 6, 4).bound == "sequential"
    assert (parallelism(True, 8, 6, 4).runs_at_once, parallelism(True, 8, 6, 4).bound) == (4, "GPUs")
    assert parallelism(True, 2, 6, 4).bound == "max_workers"
    assert parallelism(True, 0, 3, 4).bound == "runs"
    assert parallelism(True, 0, 6, None).runs_at_once == 6  # no GPUs: placement is off


def test_pool_parsing_and_picking():
    assert gpus.resolve_pool("cuda:0,1, 2,3") == [0, 1, 2, 3]
    assert gpus.resolve_pool("cuda:3,3") == [3]
    assert gpus.resolve_pool("cpu") == []
    assert gpus.pick([0, 1, 2, 3], {0, 2}, 2) == [1, 3]
    assert gpus.pick([0, 1, 2, 3], {0, 2, 3}, 2) is None
    assert gpus.pick([], set(), 1) == []
    assert gpus.slots([0, 1, 2], 2) == 1


def test_auto_without_a_driver_finds_no_gpu():
    # This box has nvidia-ml-py but no NVIDIA driver: NVML fails to load, the pool is empty.
    if Path("/proc/driver/nvidia").exists():
        pytest.skip("an NVIDIA driver is present")
    start = time.monotonic()
    assert gpus.resolve_pool("auto") == []
    assert time.monotonic() - start < 30


async def test_runs_table_shows_each_runs_gpus_only_when_placed():
    from textual.app import App

    from retrain_tui.monitor_view import RunRow
    from retrain_tui.widgets.runs_table import RunsTable

    def row(name, gpus):
        return RunRow(name=name, condition="grpo+none", seed=1, status="running", step=1,
                      max_steps=4, attempt=1, metrics={}, eta_s=float("nan"), gpus=gpus)

    class Host(App):
        def compose(self):
            yield RunsTable()

    app = Host()
    async with app.run_test(size=(160, 20)) as pilot:
        table = app.query_one(RunsTable)
        table.show([row("grpo+none_s1", ()), row("grpo+none_s2", ())])
        await pilot.pause()
        assert "gpus" not in [str(c.key.value) for c in table.columns.values()]
        table.show([row("grpo+none_s1", (0, 1)), row("grpo+none_s2", (2, 3))])
        await pilot.pause()
        assert "gpus" in [str(c.key.value) for c in table.columns.values()]
        assert str(table.get_cell("grpo+none_s2", "gpus")) == "2,3"
