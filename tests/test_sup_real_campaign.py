"""A real 4-run campaign of the built-in tiny model, end to end through `retrain campaign`."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from test_sup_helpers import (
    campaign_over,
    procs,  # noqa: F401  (fixture: kills leftovers at teardown)
    retrain,
    state,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("procs")]


@pytest.mark.timeout(300)
def test_real_tiny_campaign_completes_with_all_files(tmp_path, tiny_model_dir):
    # No skip when the trainer or squeeze is missing: both ship with the package, so a
    # missing module is a broken install and must fail here (#12 item 10).
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(textwrap.dedent("""\
        [campaign]
        seeds = [1, 2]
        max_steps = 2
        parallel = true
        max_workers = 2
        conditions = [
          { advantage_mode = "grpo", transform_mode = "none" },
          { advantage_mode = "maxrl", transform_mode = "gtpo_sepa" },
        ]

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

        [squeeze]
        min_variance_retention = 0.9
        """))
    env = dict(os.environ)
    env.pop("RETRAIN_TRAINER_CMD", None)
    res = retrain(["campaign", cfg, "--logs-dir", tmp_path / "logs"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    root = next((tmp_path / "logs").glob("campaign_*"))
    wait_until(lambda: campaign_over(root), 280, interval=0.5, what="the tiny campaign")
    st = state(root)
    errors = {n: r["error"] for n, r in st["runs"].items() if r["status"] != "succeeded"}
    assert not errors, errors
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["runs"]) == 4
    for entry in manifest["runs"]:
        run_dir = root / entry["dir"]
        for name in ("config.toml", "metrics.jsonl", "stdout.log", "stderr.log", "exit.json"):
            assert (run_dir / name).exists(), (entry["name"], name)
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        steps = [m["step"] for m in lines]
        assert len(steps) == 2 and steps[0] < steps[1]
        assert all(m["run"] == entry["name"] for m in lines)
        assert (run_dir / "checkpoints" / "final").is_dir() or (run_dir / "final").is_dir()
        assert json.loads((run_dir / "exit.json").read_text())["returncode"] == 0
    # Auto-squeeze of the first finished run: done, with a rank in the manifest.
    squeeze = st["squeeze"]
    assert squeeze["run"] in st["runs"]
    assert squeeze["status"] == "done", squeeze
    assert manifest["squeeze"]["recommended_rank"] in (1, 2, 4)
    res = retrain(["status", root, "--json"], env, tmp_path)
    summary = json.loads(res.stdout)["campaigns"][0]
    assert summary["counts"] == {"succeeded": 4}
