"""The rule language (retrain_core.expr) and its config validation with located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain_core.config import ConfigError, load_campaign
from retrain_core.expr import ExprError, evaluate, names, parse

ROW = {"step": 60, "correct_rate": 0.01, "mean_reward": 0.2, "loss": 1.5, "sepa_gate_open": False}


@pytest.mark.parametrize("text, expected", [
    ("step >= 50 and correct_rate < 0.05", True),
    ("step >= 50 and correct_rate >= 0.05", False),
    ("step < 10 or mean_reward * 2 > 0.3", True),
    ("not (loss - 1 > 0.4)", False),
    ("-loss < -1", True),
    ("sepa_gate_open == false", True),
    ("correct_rate < 1e-1", True),
    ("missing_in_row_eval_x > 1 or step > 1", True),  # or: the known side decides
    ("eval_correct_rate > 0.5", None),                # not in the row: unknown, never fires
    ("loss / (step - 60) > 1", None),                 # division by zero: unknown
])
def test_evaluate(text: str, expected) -> None:
    tree = parse(text.replace("missing_in_row_", ""))
    assert evaluate(tree, ROW) is expected


@pytest.mark.parametrize("text, column, fragment", [
    ("step >= 50 && x", 12, "use and/or/not"),
    ("corect_rate < 1", 1, "did you mean 'correct_rate'"),
    ("step = 3", 6, "comparisons are =="),
    ("(step > 1", 10, "missing ')'"),
    ("1 < step < 3", 10, "chained comparison"),
    ("step + 1", 1, "expected a condition"),
    ("step >", 7, "found the end"),
    ("", 1, "empty condition"),
    ("__import__ > 1", 1, "unknown name '__import__'"),
    ("open('x') > 1", 6, "unexpected character"),
])
def test_errors_name_their_column(text: str, column: int, fragment: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    assert info.value.column == column and fragment in str(info.value)


def test_names() -> None:
    assert names(parse("step > 3 and (loss < 1 or correct_rate > 0.2)")) == {"step", "loss", "correct_rate"}


CAMPAIGN = """[campaign]
seeds = [1, 2]
on_stall = "restrat"
conditions = [{ advantage_mode = "grpo", transform_mode = "none" }]

[[campaign.rules]]
when = "step >= 50 and corect_rate < 0.05"
action = "kill"

[[campaign.rules]]
when = "step > 3"
action = "stop"

[[campaign.rules]]
wen = "step > 3"
action = "notify"

[notify]
webhook = "ftp://example.com"
"""


def test_config_errors_are_located(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN)
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    found = {(p.line, p.key): p.message for p in info.value.problems}
    assert "did you mean \"restart\"" in found[(3, "campaign.on_stall")]
    assert "column 16: unknown name 'corect_rate'" in found[(7, "campaign.rules[0].when")]
    assert "found 'stop'" in found[(12, "campaign.rules[1].action")]
    assert "did you mean 'when'" in found[(15, "campaign.rules[2].wen")]
    assert "http:// or https://" in found[(19, "notify.webhook")]


def test_valid_rules_load(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN.replace("restrat", "restart").replace("corect", "correct")
                    .replace('"stop"', '"pause"').replace("wen =", "when =")
                    .replace("ftp://example.com", "http://127.0.0.1:9/hook"))
    camp = load_campaign(path)
    assert camp.settings.on_stall == "restart"
    assert [r["action"] for r in camp.settings.rules] == ["kill", "pause", "notify"]
    assert camp.base.notify.webhook == "http://127.0.0.1:9/hook"
