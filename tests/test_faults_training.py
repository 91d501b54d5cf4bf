"""Issue #11 item 6: non-finite training, with the real trainer on the built-in tiny model.

A NaN update is skipped (loss and grad_norm logged as null), three in a row fail the run
with an error that says so (error.json); a reward function returning NaN is an error
naming it.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
from test_sup_helpers import REPO
from test_train_run import read_jsonl, trainer_env, write_config

from retrain_core.error_record import read_error

pytestmark = pytest.mark.slow

POISON = '''
import torch
from retrain_core.advantages import AdvantageOutput, compute_advantages

def nan_all(**kwargs):
    """algorithm_mode: the usual advantages, every one NaN, no group skipped."""
    kwargs.pop("algorithm_mode", None)
    out = compute_advantages(**kwargs)
    return AdvantageOutput(out.token_advantages * float("nan"), out.episode_advantages,
                           torch.zeros_like(out.skipped), out.stats)
'''


def run_trainer(cfg, run_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "retrain_core.cli", "run", str(cfg), "--run-dir",
                           str(run_dir), "--quiet"], capture_output=True, text=True, timeout=900,
                          env=trainer_env(), cwd=REPO, check=False)


def test_nan_updates_are_skipped_then_fail_the_run(tmp_path, tiny_model_dir):
    (tmp_path / "poison.py").write_text(POISON)
    cfg = write_config(tmp_path / "run.toml", max_steps=6)
    cfg.write_text(cfg.read_text().replace('transform_mode = "gtpo_sepa"',
                                           'transform_mode = "gtpo_sepa"\nalgorithm_mode = "poison.nan_all"'))
    run_dir = tmp_path / "run"
    res = run_trainer(cfg, run_dir)
    assert res.returncode != 0, res.stdout + res.stderr[-3000:]
    assert res.stderr.count("non-finite update skipped") == 2, res.stderr[-3000:]
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1]  # the third skip in a row ends the run
    assert all(m["loss"] is None and m["grad_norm"] is None for m in metrics)
    record = read_error(run_dir)
    assert record["type"] == "NonFiniteTraining", record
    assert "not finite in 3 steps in a row" in record["message"]


def test_a_nan_reward_is_an_error_naming_the_function(tmp_path, tiny_model_dir):
    (tmp_path / "nanreward.py").write_text(
        "def score(completion, answer):\n    return float('nan')\n")
    cfg = write_config(tmp_path / "run.toml", max_steps=2)
    cfg.write_text(cfg.read_text().replace("[data]", '[reward]\ntype = "nanreward.score"\n[data]'))
    run_dir = tmp_path / "run"
    res = run_trainer(cfg, run_dir)
    assert res.returncode != 0
    assert "[reward].type = 'nanreward.score' returned nan" in res.stderr, res.stderr[-3000:]
    assert "returned nan" in read_error(run_dir)["message"]
    assert not (run_dir / "metrics.jsonl").exists() or read_jsonl(run_dir / "metrics.jsonl") == []


def wandb_records(path) -> list[bytes]:
    """The records of a .wandb file (a LevelDB-style log: 7-byte file header, 32 KiB blocks,
    records of checksum u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    data, pos, out, part = path.read_bytes(), 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind in (2, 3):
            part += chunk
        elif kind == 4:
            out.append(part + chunk)
            part = b""
        else:
            break
    return out


def wandb_history(run_dir) -> list[list[dict]]:
    """Per offline wandb run of `run_dir` (oldest first): its history rows."""
    from wandb.proto import wandb_internal_pb2

    runs = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/*.wandb")):
        rows = []
        for data in wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
        runs.append(rows)
    return runs


def test_wandb_keeps_the_steps_a_resume_redoes(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path / "run.toml", max_steps=3, save_every=2, wandb="retrain-test")
    run_dir = tmp_path / "run"
    assert run_trainer(cfg, run_dir).returncode == 0
    import shutil

    shutil.rmtree(run_dir / "final")  # as if killed after step 3 was logged: resume from step_2
    res = subprocess.run([sys.executable, "-m", "retrain_core.cli", "run", str(cfg), "--run-dir",
                          str(run_dir), "--quiet", "--max-steps", "4"], capture_output=True,
                         text=True, timeout=900, env=trainer_env(), cwd=REPO, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    first, second = wandb_history(run_dir)
    assert [r["train/step"] for r in first] == [0, 1, 2]
    assert [r["train/step"] for r in second] == [2, 3]  # step 2 redone, logged again
    for rows in (first, second):  # wandb's own counter never goes back
        steps = [r["_step"] for r in rows]
        assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert (run_dir / ".wandb_id").read_text().strip() in str(next((run_dir / "wandb").glob("offline-run-*")))
