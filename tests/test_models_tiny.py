"""The built-in tiny model ships as data; its builder is deterministic and says how it ran."""

from __future__ import annotations

import json
import subprocess
import sys

from retrain_core.models.tiny import BUILTIN_NAME, file_digests, resolve_model_path


def _retrain(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "retrain_core.cli", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_shipped_files_are_the_ones_the_build_record_names(tiny_model_dir):
    info = json.loads((tiny_model_dir / "BUILD_INFO.json").read_text())
    assert info["sha256"] == file_digests(tiny_model_dir)
    assert info["recipe"]["warm_steps"] == 600 and info["model_version"] == "tiny-arith-v3"
    assert resolve_model_path(BUILTIN_NAME) == str(tiny_model_dir)


def test_shipped_model_loads_without_a_build(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.num_hidden_layers == 2
    assert tok.decode(tok("12+3=15", add_special_tokens=False)["input_ids"]) == "12+3=15"


def test_build_is_deterministic_on_a_short_schedule(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        proc = _retrain("models", "build", "tiny-arith", "--out", str(out), "--steps", "3")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "warm-start" in proc.stderr  # the progress bar
    a = json.loads((first / "BUILD_INFO.json").read_text())
    b = json.loads((second / "BUILD_INFO.json").read_text())
    assert a["sha256"] == b["sha256"] == file_digests(first) == file_digests(second)
    assert a["recipe"]["warm_steps"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_build_refuses_a_non_empty_folder_and_bad_steps(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = _retrain("models", "build", "tiny-arith", "--out", str(tmp_path), "--steps", "1")
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
    bad = _retrain("models", "build", "tiny-arith", "--out", str(tmp_path / "x"), "--steps", "0")
    assert bad.returncode == 2 and "--steps" in bad.stderr


def test_models_list_names_the_shipped_folder(tiny_model_dir):
    proc = _retrain("models", "list", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert BUILTIN_NAME in proc.stdout and str(tiny_model_dir) in proc.stdout
