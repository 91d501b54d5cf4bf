"""`retrain compare`: statistics checked against scipy on a campaign folder with known values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from retrain_core.cli import main as retrain
from retrain_core.compare import CompareError, compare_campaign
from retrain_core.stats import t_ppf
from tests.support.campaigns import write_json

SEEDS = [11, 22, 33, 44, 55, 66]
# Per-seed final correct rates; the treatment is +3 pp with per-seed noise, so paired
# differences are much tighter than the across-seed spread.
BASE = [0.30, 0.42, 0.25, 0.51, 0.38, 0.33]
TREAT = [0.34, 0.44, 0.29, 0.53, 0.42, 0.35]
FLAT = [0.31, 0.40, 0.27, 0.50, 0.36, 0.36]
VALUES = {"grpo+none": BASE, "maxrl+gtpo_sepa": TREAT, "maxrl+none": FLAT}


def build_campaign(root: Path, values: dict = VALUES, steps: int = 30, eval_rows: bool = False) -> Path:
    """A campaign folder whose runs' last 10 steps all hold the known value (earlier steps
    hold noise that the window last:10 must ignore)."""
    directory = root / "campaign_20260101_000000_cmp"
    runs = []
    for label, vals in values.items():
        for seed, v in zip(SEEDS, vals):
            name = f"{label}_s{seed}"
            run_dir = directory / "runs" / name
            run_dir.mkdir(parents=True)
            with open(run_dir / "metrics.jsonl", "w") as f:
                for step in range(steps):
                    rate = v if step >= steps - 10 else 0.9 - (step % 3) * 0.1
                    f.write(json.dumps({"step": step, "run": name, "condition": label, "seed": seed,
                                        "correct_rate": rate, "loss": 1.0 / (step + 1)}) + "\n")
            if eval_rows:
                with open(run_dir / "eval.jsonl", "w") as f:
                    for step in (9, 19, 29):
                        f.write(json.dumps({"step": step, "mode": "greedy", "correct_rate": v / 2}) + "\n")
                        f.write(json.dumps({"step": step, "mode": "sampled", "correct_rate": 0.99}) + "\n")
            runs.append({"name": name, "condition": label, "seed": seed, "dir": f"runs/{name}",
                         "max_steps": steps})
    write_json(directory / "manifest.json", {
        "campaign": directory.name, "runs": runs,
        "conditions": [{"label": label} for label in values]})
    write_json(directory / "state.json", {"runs": {r["name"]: {"status": "succeeded"} for r in runs}})
    return directory


def scipy_t_interval(x) -> tuple[float, float, float]:
    x = np.asarray(x, dtype=float)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return x.mean(), low, high


def test_t_quantiles_match_scipy() -> None:
    for df in (1, 2, 5, 7, 19, 120):
        for p in (0.6, 0.8, 0.975, 0.995):
            assert t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), abs=1e-9)


def test_means_intervals_and_paired_differences_match_scipy(tmp_path: Path) -> None:
    comp = compare_campaign(build_campaign(tmp_path), window="last:10")
    assert comp.baseline == "grpo+none" and comp.source == "train"
    by_label = {c.label: c for c in comp.conditions}
    for label, vals in VALUES.items():
        mean, low, high = scipy_t_interval(vals)
        got = by_label[label].across_seeds
        assert (got.mean, got.low, got.high, got.n) == (pytest.approx(mean), pytest.approx(low),
                                                        pytest.approx(high), 6)

    treat = by_label["maxrl+gtpo_sepa"]
    diffs = np.array(TREAT) - np.array(BASE)
    mean, low, high = scipy_t_interval(diffs)
    assert (treat.diff.mean, treat.diff.low, treat.diff.high) == (
        pytest.approx(mean), pytest.approx(low), pytest.approx(high))
    # the paired test agrees with scipy's: the interval excludes 0 exactly when p < 0.05
    assert stats.ttest_rel(TREAT, BASE).pvalue < 0.05 and treat.diff.excludes_zero()
    assert "maxrl+gtpo_sepa is higher" in treat.verdict and "+3.0 pp" in treat.verdict

    # bootstrap: scipy's percentile bootstrap with other random draws lands within a
    # small fraction of the interval's width
    ref = stats.bootstrap((diffs,), np.mean, confidence_level=0.95, n_resamples=20000,
                          method="percentile", random_state=1).confidence_interval
    width = ref.high - ref.low
    assert treat.bootstrap.low == pytest.approx(ref.low, abs=0.1 * width)
    assert treat.bootstrap.high == pytest.approx(ref.high, abs=0.1 * width)
    # seeded: the same campaign gives the same interval every time
    again = compare_campaign(tmp_path / "campaign_20260101_000000_cmp", window="last:10")
    assert again.conditions[1].bootstrap == treat.bootstrap

    # minimum detectable effect: (t_{.975,n-1} + t_{.8,n-1}) · sd / √n
    sd = diffs.std(ddof=1)
    assert treat.mde == pytest.approx((stats.t.ppf(0.975, 5) + stats.t.ppf(0.8, 5)) * sd / math.sqrt(6))

    flat = by_label["maxrl+none"]
    assert stats.ttest_rel(FLAT, BASE).pvalue > 0.05 and not flat.diff.excludes_zero()
    assert "no detectable difference" in flat.verdict and "could detect ≥" in flat.verdict


def test_step_window_other_baseline_and_unpaired_seeds(tmp_path: Path) -> None:
    values = dict(VALUES)
    directory = build_campaign(tmp_path, values)
    comp = compare_campaign(directory, baseline="maxrl+none", metric="loss", window="step:3")
    assert comp.baseline == "maxrl+none"
    assert comp.conditions[0].across_seeds.mean == pytest.approx(0.25)  # loss at step 3 = 1/4
    assert comp.conditions[0].diff.mean == pytest.approx(0.0)
    # a seed missing from the baseline is not paired
    (directory / "runs" / "maxrl+none_s11" / "metrics.jsonl").write_text("")
    comp = compare_campaign(directory, baseline="maxrl+none", window="last:10")
    assert comp.conditions[0].diff.n == 5 and comp.conditions[0].across_seeds.n == 6


def test_eval_rows_are_used_when_present(tmp_path: Path) -> None:
    directory = build_campaign(tmp_path, eval_rows=True)
    comp = compare_campaign(directory, window="last:1")
    assert comp.source == "eval"
    # greedy rows (v / 2), not the sampled ones
    assert comp.conditions[0].across_seeds.mean == pytest.approx(np.mean(BASE) / 2)
    assert compare_campaign(directory, window="last:10", source="train").conditions[0].across_seeds.mean \
        == pytest.approx(np.mean(BASE))


def test_cli_json_markdown_csv(tmp_path: Path, capsys) -> None:
    directory = build_campaign(tmp_path)
    assert retrain(["compare", str(directory), "--window", "last:10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseline"] == "grpo+none" and data["metric"] == "correct_rate"
    treat = data["conditions"][1]
    assert treat["paired_diff"]["mean"] == pytest.approx(np.mean(np.array(TREAT) - BASE))
    assert treat["paired_diff"]["n"] == 6 and len(treat["runs"]) == 6
    assert retrain(["compare", str(directory), "--window", "last:10", "--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| condition |") and "| maxrl+gtpo_sepa | 6 |" in md
    assert retrain(["compare", str(directory), "--window", "last:10", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("condition,n,mean") and len(lines) == 4
    assert retrain(["compare", str(directory), "--window", "last:10"]) == 0
    text = capsys.readouterr().out
    assert "maxrl+gtpo_sepa − grpo+none = +3.0 pp" in text


@pytest.mark.parametrize("kwargs, message", [
    ({"baseline": "nope"}, "--baseline 'nope': no such condition"),
    ({"window": "last:0"}, "--window 'last:0'"),
    ({"window": "first:3"}, "expected last:N"),
    ({"metric": "correct"}, "did you mean 'correct_rate'"),
])
def test_user_errors_are_explained(tmp_path: Path, kwargs, message) -> None:
    directory = build_campaign(tmp_path)
    with pytest.raises(CompareError, match=message.replace("(", r"\(").replace("[", r"\[")):
        compare_campaign(directory, **kwargs)


def test_cli_error_is_one_line(tmp_path: Path, capsys) -> None:
    assert retrain(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a campaign directory" in err and "Traceback" not in err
