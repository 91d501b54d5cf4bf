"""Evaluation during training on the real tiny model: held-out rows, best/, and `retrain
compare` / `status` reading them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from peft import PeftModel  # noqa: F401  (best/ must be a PEFT adapter folder)

from retrain_core.tasks.data import Example, heldout_examples, load_examples
from retrain_core.train.periodic_eval import split_heldout

RUN_TOML = """
[model]
model = "builtin:tiny-arith"
lora_rank = 4
[backend]
devices = "cpu"
[algorithm]
advantage_mode = "grpo"
transform_mode = "none"
[training]
seed = 5
max_steps = 5
batch_size = 2
group_size = 4
max_tokens = 24
temperature = 1.0
top_p = 1.0
lr = 5e-3
save_every = 0
[data]
source = "{source}"
[eval]
every = 2
examples = 6
sampling = "both"
"""


def test_split_is_disjoint_and_the_same_for_every_seed(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "answer": str(i)} for i in range(50)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_examples(f"jsonl:{data}")
    train, held, note = split_heldout(f"jsonl:{data}", examples, 8)
    assert len(held) == 8 and len(train) == 42 and "set aside" in note
    assert not {e.question for e in held} & {e.question for e in train}
    assert split_heldout(f"jsonl:{data}", examples, 8)[1] == held  # no dependence on the run
    # at most 20% is ever set aside
    assert len(split_heldout(f"jsonl:{data}", examples, 40)[1]) == 10
    with pytest.raises(ValueError, match="too few"):
        split_heldout(f"jsonl:{data}", examples[:3], 8)
    # arithmetic has its own held-out split: training data stays whole
    arith = [Example("1+1", "2")]
    train, held, note = split_heldout("arithmetic", arith, 5)
    assert train == arith and len(held) == 5 and "held-out split" in note
    assert {e.question for e in held} <= {e.question for e in heldout_examples("arithmetic")}


@pytest.mark.slow
def test_training_writes_eval_rows_and_keeps_the_best(tmp_path: Path, tiny_model_dir) -> None:
    config = tmp_path / "run.toml"
    config.write_text(RUN_TOML.format(source="arithmetic"))
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("RETRAIN_RUN_ID", None)
    res = subprocess.run([sys.executable, "-m", "retrain_core.cli", "run", str(config),
                          "--run-dir", str(run_dir)], capture_output=True, text=True,
                         timeout=900, env=env, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    # after steps 2, 4 and the last (5): greedy then sampled, each on the 6 held-out problems
    assert [(r["step"], r["mode"]) for r in rows] == [
        (1, "greedy"), (1, "sampled"), (3, "greedy"), (3, "sampled"), (4, "greedy"), (4, "sampled")]
    assert all(r["examples"] == 6 and 0 <= r["correct_rate"] <= 1 for r in rows)
    assert "eval after step 1: greedy correct rate" in res.stdout
    best = json.loads((run_dir / "best" / "trainer_state.json").read_text())["best"]
    greedy = [r for r in rows if r["mode"] == "greedy"]
    top = max(r["correct_rate"] for r in greedy)
    assert best["mode"] == "greedy" and best["correct_rate"] == top
    assert best["step"] == next(r["step"] for r in greedy if r["correct_rate"] == top)  # first best
    assert (run_dir / "best" / "adapter_model.safetensors").exists()
    # the training metrics are untouched by evaluation: one row per step
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 5
