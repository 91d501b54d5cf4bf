"""`retrain explain` through the real console script, and the no-Textual import rule."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from retrain_core.config import config_to_toml, load_campaign

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "retrain"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "retrain_core.cli"]


def explain(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, "explain", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240, check=False)


def test_ablation_text_with_h100_preset(tmp_path: Path) -> None:
    result = explain("configs/ablation.toml", "--gpu", "h100", "--logs-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "5 conditions × 8 seeds = 40 runs" in out
    assert "20,000 steps" in out
    assert "sequential: 83.9 h" in out
    assert "wall time: 21.0 h with 4 workers" in out
    assert "preset:h100" in out
    assert "maxrl+gtpo_sepa_s707" in out and "grpo+none_s42" in out


def test_json_output_is_stable(tmp_path: Path) -> None:
    result = explain("configs/ablation.toml", "--json", "--step-time", "15.1", "--logs-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == 1 and data["ok"] is True
    assert set(data) == {"schema", "ok", "source", "is_campaign", "counts", "settings",
                         "conditions", "runs", "base", "estimate", "launch_problems",
                         "launch_notes", "defaults"}
    assert data["defaults"] == []  # the ablation sets conditions, seeds, model and steps
    # Offline (the tests set HF_HUB_OFFLINE) and without the model in the HF cache, the
    # ablation is valid but cannot start here: the model and the `math` dataset are missing.
    assert {p["key"] for p in data["launch_problems"]} <= {"model.model", "data.source"}
    assert data["counts"] == {"conditions": 5, "seeds": 8, "runs": 40, "total_steps": 20000}
    assert data["settings"]["max_workers"] == 4 and data["settings"]["parallel"] is True
    assert data["conditions"][0]["label"] == "grpo+none"
    assert data["conditions"][0]["differs_from_base"]["algorithm.advantage_mode"] == {
        "value": "grpo", "base": "maxrl"}
    assert len(data["conditions"][4]["runs"]) == 8
    assert data["runs"][0] == {"name": "grpo+none_s42", "label": "grpo+none", "seed": 42, "max_steps": 500}
    est = data["estimate"]
    assert est["step_time_source"] == "given"
    assert round(est["sequential_hours"]) == 84 and round(est["wall_hours"]) == 21
    assert set(est) >= {"runs", "total_steps", "completions_per_step", "token_budget_per_step",
                        "effective_parallelism", "stagger", "median_step_time_s",
                        "step_time_source", "sequential_hours", "wall_hours", "pilot_files"}


def test_single_run_config_and_pilot_source(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[algorithm]\nadvantage_mode = "grpo"\ntransform_mode = "gtpo"\n'
                      '[training]\nseed = 5\nmax_steps = 40\nbatch_size = 2\n')
    run_dir = tmp_path / "logs" / "pilot"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(config_to_toml(load_campaign(config).base))
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps({"step": i, "step_time_s": 9.0})
                                                     for i in range(4)))
    result = explain(str(config), "--logs-dir", str(tmp_path / "logs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "single run" in result.stdout
    assert "1 condition × 1 seed = 1 run, 40 steps" in result.stdout
    assert "grpo+gtpo_s5" in result.stdout
    assert "[pilot]" in result.stdout and "sequential: 6 min" in result.stdout


def test_problems_go_to_stderr_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[campaign]\nseeds = [1, 1]\n[training]\ntop_p = 2.0\nbatch_sise = 3\n')
    result = explain(str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{bad}:2: campaign.seeds[1]: duplicate seed 1: each seed may appear once",
        f"{bad}:4: training.top_p: expected a number in (0, 1], found float 2.0",
        f'{bad}:5: training.batch_sise: unknown key in [training] (did you mean "batch_size"?)',
    ]
    as_json = explain(str(bad), "--json")
    assert as_json.returncode == 2
    data = json.loads(as_json.stdout)
    assert data["ok"] is False and data["schema"] == 1
    assert [(p["line"], p["key"]) for p in data["problems"]] == [
        (2, "campaign.seeds[1]"), (4, "training.top_p"), (5, "training.batch_sise")]


def test_seed_example_explains() -> None:
    result = explain("configs/seed_example.toml", "--gpu", "a100")
    assert result.returncode == 0, result.stderr
    assert "2 conditions × 4 seeds = 8 runs, 400 steps" in result.stdout
    assert "backend tinker" in result.stdout
    # No API key in the test environment: explain says why it cannot launch here.
    assert re.search(r'Note: configs/seed_example.toml:\d+: backend.backend: backend "tinker" '
                     r"cannot run here", result.stdout)


def test_retrain_core_never_imports_textual() -> None:
    code = ("import sys, retrain_core, retrain_core.config, retrain_core.plan, retrain_core.cli, "
            "retrain_core.explain\n"
            "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"


def test_differences_show_only_what_a_condition_changes() -> None:
    from retrain_core.config import load_campaign_text
    from retrain_core.explain import explain_dict, render_text
    from retrain_core.plan import estimate

    camp = load_campaign_text(
        '[campaign]\nseeds = [1]\nmax_steps = 100\nconditions = [\n'
        '  { advantage_mode = "maxrl", transform_mode = "gtpo_sepa" },\n'
        '  { advantage_mode = "maxrl", transform_mode = "gtpo_sepa", sepa = { steps = 50 } },\n]\n',
        "ov.toml")
    est = estimate(camp, step_time_s=36)
    data = explain_dict(camp, est)
    assert [c["differs_from_base"] for c in data["conditions"]] == [
        {}, {"sepa.steps": {"value": 50, "base": 500}}]
    assert data["conditions"][1]["overrides"] == {"sepa.steps": 50}
    assert data["conditions"][1]["line"] == 6
    text = render_text(camp, est)
    assert "sepa.steps = 50  (base 500)" in text and "training.max_steps" not in text
    assert "2 runs × 100 steps = 200 steps" in text and "sequential: 2.0 h" in text
