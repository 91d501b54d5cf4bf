"""Capacity planning: counts, presets, pilot medians, precedence, ETA."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from retrain_core.config import config_to_toml, load_campaign, load_campaign_text
from retrain_core.plan import GPU_PRESETS, estimate, eta_seconds, find_pilots, preset_step_time

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ablation():
    return load_campaign(REPO / "configs" / "ablation.toml")


def test_ablation_on_h100_is_84h_sequential_21h_with_four_workers(ablation, tmp_path) -> None:
    est = estimate(ablation, gpu="h100", logs_dir=tmp_path)
    assert (est.runs, est.total_steps) == (40, 20_000)
    assert est.completions_per_step == 128 and est.token_budget_per_step == 8 * 16 * 10240
    assert est.effective_parallelism == 4
    assert est.step_time_source == "preset:h100" and est.median_step_time_s == pytest.approx(15.1)
    assert est.sequential_hours == pytest.approx(83.9, abs=0.05)
    assert est.wall_hours == pytest.approx(20.97, abs=0.05)
    assert json.loads(json.dumps(est.to_dict()))["wall_hours"] == pytest.approx(est.wall_hours)


@pytest.mark.parametrize("gpu,hours", [("a100", 140), ("4090", 252.2)])
def test_other_presets_match_the_docs_budget(ablation, gpu, hours, tmp_path) -> None:
    assert estimate(ablation, gpu=gpu, logs_dir=tmp_path).sequential_hours == pytest.approx(hours, abs=0.1)


def test_preset_scales_linearly_with_token_budget() -> None:
    assert preset_step_time("h100", 8 * 16 * 5120) == pytest.approx(GPU_PRESETS["h100"] / 2)
    camp = load_campaign_text("[campaign]\nseeds=[1]\n[training]\nmax_tokens = 2560\n")
    assert estimate(camp, gpu="h100", logs_dir="/nonexistent").median_step_time_s == pytest.approx(15.1 / 4)


def test_sequential_campaign_and_stagger() -> None:
    text = "[campaign]\nseeds=[1,2]\nmax_steps=10\n{extra}\n"
    sequential = estimate(load_campaign_text(text.format(extra="")), step_time_s=3.6)
    assert sequential.effective_parallelism == 1
    assert sequential.wall_hours == pytest.approx(sequential.sequential_hours) == pytest.approx(0.1)
    parallel = estimate(load_campaign_text(text.format(extra="parallel=true\nstagger_seconds=36")),
                        step_time_s=3.6)
    assert parallel.effective_parallelism == 10  # max_workers = 0: every run at once
    assert parallel.stagger == 36 * 9
    assert parallel.wall_hours == pytest.approx(0.01 + 0.09)
    capped = estimate(load_campaign_text(text.format(extra="parallel=true\nmax_workers=64")), step_time_s=1)
    assert capped.effective_parallelism == 10


def test_unknown_step_time_still_counts(ablation, tmp_path) -> None:
    est = estimate(ablation, logs_dir=tmp_path)
    assert est.step_time_source == "unknown"
    assert est.sequential_hours is None and est.wall_hours is None
    assert est.total_steps == 20_000


def write_pilot(root: Path, name: str, config, rows: list) -> Path:
    run_dir = root / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.toml").write_text(config_to_toml(config))
    lines = [json.dumps(r) for r in rows] + ['{"step": 99, "step_ti']  # a partial last line
    (run_dir / "metrics.jsonl").write_text("\n".join(lines))
    return run_dir / "metrics.jsonl"


def test_pilot_median_from_matching_runs_only(ablation, tmp_path) -> None:
    logs = tmp_path / "logs"
    config = ablation.runs[0].config
    first = write_pilot(logs / "campaign_a" / "runs", "grpo+none_s42", config,
                        [{"step": 0, "step_time_s": 10.0}, {"step": 1, "step_time_s": 12.0},
                         {"step": 2, "step_time_s": 500.0, "skipped": True}])
    second = write_pilot(logs / "campaign_b" / "runs", "maxrl+gtpo_s1", ablation.runs[20].config,
                         [{"step": 0, "step_time_s": 14.0}, {"step": 1, "step_time_s": 16.0},
                          {"step": 2, "step_time_s": 18.0}])
    other = load_campaign_text(textwrap.dedent("""
        [training]
        max_tokens = 1024
        """)).base
    write_pilot(logs / "other", "small", other, [{"step": 0, "step_time_s": 1.0}] * 5)
    times, files = find_pilots(logs, ("Qwen/Qwen3-4B-Instruct-2507", 8, 16, 10240))
    assert sorted(times) == [10.0, 12.0, 14.0, 16.0, 18.0] and len(files) == 2
    est = estimate(ablation, logs_dir=logs)
    assert est.step_time_source == "pilot"
    assert est.median_step_time_s == 14.0
    assert est.pilot_files == sorted([str(first), str(second)])
    assert est.sequential_hours == pytest.approx(20_000 * 14 / 3600)
    # explicit choices beat pilots: step time first, then the GPU preset
    assert estimate(ablation, gpu="a100", logs_dir=logs).step_time_source == "preset:a100"
    assert estimate(ablation, gpu="a100", step_time_s=2, logs_dir=logs).step_time_source == "given"


def test_unknown_gpu_preset_is_rejected(ablation) -> None:
    with pytest.raises(ValueError, match="h100"):
        estimate(ablation, gpu="tpu")


def test_eta_seconds() -> None:
    assert eta_seconds(100, [2.0, 4.0, 100.0]) == pytest.approx(400.0)
    assert eta_seconds(100, [2.0, 4.0, 100.0], parallelism=4) == pytest.approx(100.0)
    assert eta_seconds(0, [3.0]) == 0
    assert eta_seconds(10, []) is None
