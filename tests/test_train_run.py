"""`retrain run` end to end on the tiny model: the files a run writes, adapters, wandb, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from retrain_core.train import EXIT_PREEMPTED
from retrain_core.train.metrics import METRIC_FIELDS, TIMING_FIELDS

RUN_TOML = """
[model]
model = "builtin:tiny-arith"
lora_rank = 4
[backend]
devices = "cpu"
[algorithm]
advantage_mode = "maxrl"
transform_mode = "gtpo_sepa"
[training]
seed = 11
max_steps = {max_steps}
batch_size = 2
group_size = 4
max_tokens = 28
temperature = 1.0
top_p = 1.0
lr = 5e-3
save_every = {save_every}
[data]
source = "arithmetic"
[sepa]
steps = 4
delay_steps = 0
correct_rate_gate = 0.0
[logging]
wandb_project = "{wandb}"
"""


def write_config(path: Path, max_steps: int, save_every: int = 2, wandb: str = "") -> Path:
    path.write_text(RUN_TOML.format(max_steps=max_steps, save_every=save_every, wandb=wandb))
    return path


def trainer_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("RETRAIN_RUN_ID", None)  # standalone: the trainer writes exit.json itself
    return env


def run_cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "retrain_core.cli", "run", *args], capture_output=True,
                          text=True, timeout=timeout, env=trainer_env(), check=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_three_step_run_writes_every_file_and_a_working_adapter(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path / "run.toml", max_steps=3, wandb="retrain-test")
    run_dir = tmp_path / "run"
    proc = run_cli(str(cfg), "--run-dir", str(run_dir), "--run-name", "maxrl+gtpo_sepa_s11")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 3/3" in proc.stdout and "ETA" in proc.stdout and "λ" in proc.stdout

    for name in ("config.toml", "metrics.jsonl", "emergence/steps.jsonl", "emergence/generations.jsonl",
                 "checkpoints/step_2/trainer_state.json", "final/trainer_state.json",
                 "final/adapter_model.safetensors", "final/adapter_config.json",
                 "stdout.log", "stderr.log", "exit.json"):
        assert (run_dir / name).exists(), name
    assert "seed = 11" in (run_dir / "config.toml").read_text()
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2]
    for m in metrics:
        assert set(METRIC_FIELDS) <= set(m), set(METRIC_FIELDS) - set(m)
        assert m["run"] == "maxrl+gtpo_sepa_s11" and m["condition"] == "maxrl+gtpo_sepa" and m["seed"] == 11
        assert m["batch_size"] == 2 and m["group_size"] == 4 and 0 <= m["correct_rate"] <= 1
    # The warm start put "let me check" in some targets: planning tokens exist.
    assert any(m["planning_token_fraction"] > 0 for m in metrics)
    steps = read_jsonl(run_dir / "emergence/steps.jsonl")
    assert steps[0].keys() >= {"step", "mean_reward", "correct_count", "total_count", "condition"}
    gens = read_jsonl(run_dir / "emergence/generations.jsonl")
    assert len(gens) == 3 * 8 and gens[0].keys() >= {"step", "prompt", "completion", "reward", "num_tokens"}
    state = json.loads((run_dir / "final/trainer_state.json").read_text())
    assert state["step"] == 3 and state["data_cursor"] == 6 and "sepa" in state and "rng" in state
    exit_info = json.loads((run_dir / "exit.json").read_text())
    assert exit_info["returncode"] == 0 and exit_info["ended_at"] > 0
    # wandb offline: a local run directory with the run's files.
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline and any(offline[0].rglob("*.wandb"))

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok(tok.bos_token + "12+3=?\n\nPut your final answer within \\boxed{}.", return_tensors="pt",
              add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        before = base(ids).logits
    model = PeftModel.from_pretrained(base, run_dir / "final")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)
    with torch.no_grad():
        after = model(ids).logits
    assert (after - before).abs().max() > 1e-5


@pytest.mark.slow
def test_sigterm_then_resume_matches_straight_run(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path / "run.toml", max_steps=4, save_every=0)
    straight = tmp_path / "straight"
    proc = run_cli(str(cfg), "--run-dir", str(straight))
    assert proc.returncode == 0, proc.stderr[-3000:]

    resumed = tmp_path / "resumed"
    child = subprocess.Popen([sys.executable, "-m", "retrain_core.cli", "run", str(cfg), "--run-dir", str(resumed)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=trainer_env())
    for line in child.stdout:  # first progress line: the trainer is inside the step loop
        if line.startswith("step 1/4"):
            child.send_signal(signal.SIGTERM)
            break
    child.communicate(timeout=240)
    assert child.returncode == EXIT_PREEMPTED
    stopped_at = json.loads(next((resumed / "checkpoints").glob("step_*/trainer_state.json")).read_text())["step"]
    assert 1 <= stopped_at < 4  # it finished the step it was in (or had just finished), then checkpointed
    assert json.loads((resumed / "exit.json").read_text())["returncode"] == EXIT_PREEMPTED

    proc = run_cli(str(cfg), "--run-dir", str(resumed), "--resume", str(resumed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout

    def comparable(path: Path) -> list[dict]:
        return [{k: v for k, v in m.items() if k not in TIMING_FIELDS} for m in read_jsonl(path)]

    a, b = comparable(straight / "metrics.jsonl"), comparable(resumed / "metrics.jsonl")
    assert [m["step"] for m in b] == [0, 1, 2, 3]
    assert a[2:] == b[2:] and a == b
    assert read_jsonl(straight / "emergence/generations.jsonl") == read_jsonl(resumed / "emergence/generations.jsonl")

    # Automatic resume (what a supervisor restart relies on): the run dir holds final/ at
    # step 4, so a longer run continues from there without --resume.
    proc = run_cli(str(cfg), "--run-dir", str(resumed), "--max-steps", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "step 5/5" in proc.stdout and "step 4/5" not in proc.stdout
    assert [m["step"] for m in read_jsonl(resumed / "metrics.jsonl")] == [0, 1, 2, 3, 4]
    assert json.loads((resumed / "final" / "trainer_state.json").read_text())["step"] == 5


@pytest.mark.slow
def test_throttle_slot_wait_is_reported(tmp_path, tiny_model_dir):
    import time

    from retrain_core.throttle import Throttle

    throttle_dir = tmp_path / "throttle"
    cfg = write_config(tmp_path / "run.toml", max_steps=1, save_every=0)
    cfg.write_text(cfg.read_text().replace('[backend]\ndevices = "cpu"',
                                           f'[backend]\ndevices = "cpu"\nmax_concurrent = 1\nthrottle_dir = "{throttle_dir}"'))
    run_dir = tmp_path / "run"
    with Throttle(throttle_dir, 1, "blocker"):  # the only slot is taken
        child = subprocess.Popen([sys.executable, "-m", "retrain_core.cli", "run", str(cfg), "--run-dir", str(run_dir)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=trainer_env())
        deadline = time.time() + 180
        while not (run_dir / "config.toml").exists() and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)  # config.toml is written right before the first sampling phase
        time.sleep(1.0)
        assert child.poll() is None  # still waiting for the slot
    _, err = child.communicate(timeout=240)
    assert child.returncode == 0, err[-3000:]
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert metrics[0]["throttle_wait_s"] >= 0.8
    assert metrics[0]["sample_time_s"] < metrics[0]["step_time_s"] - 0.8
