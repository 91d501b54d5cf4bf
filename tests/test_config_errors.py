"""Malformed configs: every one gives ConfigError naming the right line and dotted key."""

from __future__ import annotations

import textwrap

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrain_core.config import ConfigError, Problem, load_campaign, load_campaign_text
from retrain_core.config.rules import FIELD_TYPES

CAMPAIGN = """\
[campaign]
seeds = [1, 2]
conditions = [
  {{ advantage_mode = "grpo", transform_mode = "none" }},
  {cond}
]
"""

# (id, document, line, key, a fragment of the message)
CASES = [
    ("syntax-unclosed-array", "[training]\nbatch_size = [1, 2\n", 2, "training.batch_size", "syntax"),
    ("syntax-missing-value", "[model]\nmodel =\n", 2, "model.model", "syntax"),
    ("syntax-bad-header", "[training]\nlr = 1e-4\n[sepa\n", 3, "sepa", "syntax"),
    ("syntax-duplicate-key", "[training]\nlr = 1e-4\nlr = 2e-4\n", 3, "training.lr", "syntax"),
    ("int-field-string", "[training]\nbatch_size = \"8\"\n", 2, "training.batch_size", "expected an integer"),
    ("int-field-float", "\n[training]\ngroup_size = 16.0\n", 3, "training.group_size", "found float 16.0"),
    ("int-field-bool", "[training]\nmax_steps = true\n", 2, "training.max_steps", "found boolean true"),
    ("float-field-bool", "[gtpo]\nbeta = false\n", 2, "gtpo.beta", "expected a number"),
    ("bool-field-int", "[data]\nshuffle = 1\n", 2, "data.shuffle", "expected a boolean"),
    ("str-field-int", "[model]\nmodel = 4\n", 2, "model.model", "expected a string"),
    ("list-field-str", "[model]\nlora_target_modules = \"q_proj\"\n", 2, "model.lora_target_modules", "array of strings"),
    ("section-not-table", "training = 3\n", 1, "training", "expected a table"),
    ("unknown-key-hint", "[training]\nbatch_sise = 8\n", 2, "training.batch_sise", 'did you mean "batch_size"'),
    ("unknown-key-other-section", "[model]\n\nlr = 1e-5\n", 3, "model.lr", "belongs in [training]"),
    ("unknown-section-hint", "[trainig]\nlr = 1e-5\n", 1, "trainig", 'did you mean "training"'),
    ("unknown-campaign-key", "[campaign]\nseed = [1]\n", 2, "campaign.seed", 'did you mean "seeds"'),
    ("duplicate-seeds", "[campaign]\nseeds = [42, 7, 42]\n", 2, "campaign.seeds[2]", "duplicate seed 42"),
    ("seed-too-large", "[campaign]\nseeds = [1,\n  4294967296]\n", 3, "campaign.seeds[1]", "0..4294967295"),
    ("seed-negative", "[campaign]\nseeds = [-2]\n", 2, "campaign.seeds[0]", "expected -1"),
    ("training-seed-range", "[training]\nseed = -7\n", 2, "training.seed", "-1 (random)"),
    ("empty-seeds", "[campaign]\nseeds = []\n", 2, "campaign.seeds", "at least one seed"),
    ("missing-condition-mode", CAMPAIGN.format(cond='{ advantage_mode = "maxrl" }'), 5,
     "campaign.conditions[1].transform_mode", "missing"),
    ("missing-both-modes", CAMPAIGN.format(cond="{ lr = 1e-5 }"), 5,
     "campaign.conditions[1].advantage_mode", "missing"),
    ("unknown-advantage-mode", "[algorithm]\nadvantage_mode = \"maxrll\"\n", 2,
     "algorithm.advantage_mode", 'did you mean "maxrl"'),
    ("unknown-transform-in-condition", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo_sep" }'),
     5, "campaign.conditions[1].transform_mode", 'did you mean "gtpo_sepa"'),
    ("unknown-uncertainty", "[algorithm]\nuncertainty_kind = \"entropyy\"\n", 2,
     "algorithm.uncertainty_kind", "did you mean"),
    ("duplicate-labels", CAMPAIGN.format(cond='{ advantage_mode = "grpo", transform_mode = "none" }'), 5,
     "campaign.conditions[1]", "duplicate condition label"),
    ("negative-batch", "[training]\nbatch_size = -8\n", 2, "training.batch_size", "positive integer"),
    ("zero-group", "[training]\ngroup_size = 0\n", 2, "training.group_size", "an integer >= 2"),
    ("negative-max-tokens", "[training]\nmax_tokens = -1\n", 2, "training.max_tokens", "positive"),
    ("top-p-high", "[training]\ntop_p = 1.5\n", 2, "training.top_p", "(0, 1]"),
    ("top-p-zero", "[training]\ntop_p = 0\n", 2, "training.top_p", "(0, 1]"),
    ("hicra-alpha-above-one", "[hicra]\nalpha = 1.5\n", 2, "hicra.alpha", "[0, 1]"),
    ("temperature-zero", "[training]\ntemperature = 0.0\n", 2, "training.temperature", "> 0"),
    ("lr-negative", "[training]\nlr = -4e-5\n", 2, "training.lr", "> 0"),
    ("lr-nan", "[training]\nlr = nan\n", 2, "training.lr", "finite"),
    ("dropout-one", "[model]\nlora_dropout = 1.0\n", 2, "model.lora_dropout", "[0, 1)"),
    ("lora-rank-zero", "[model]\nlora_rank = 0\n", 2, "model.lora_rank", "positive"),
    ("bad-schedule", "[sepa]\nschedule = \"linaer\"\n", 2, "sepa.schedule", 'did you mean "linear"'),
    ("bad-backend", "[backend]\nbackend = \"tinkr\"\n", 2, "backend.backend", 'did you mean "tinker"'),
    ("bad-data-source", "[data]\nsource = \"mth\"\n", 2, "data.source", 'did you mean "math"'),
    ("bad-template", "[data]\nprompt_template = \"{q}\"\n", 2, "data.prompt_template", "{question}"),
    ("bad-override-key", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo", gtpo_bta = 0.2 }'),
     5, "campaign.conditions[1].gtpo_bta", 'did you mean "gtpo_beta"'),
    ("bad-override-section-key", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo_sepa", sepa = { stpes = 1 } }'),
     5, "campaign.conditions[1].sepa.stpes", 'did you mean "steps"'),
    ("bad-override-value", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo", lr = "fast" }'),
     5, "campaign.conditions[1].lr", "expected a number"),
    ("override-range-merged", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo", top_p = 2 }'),
     5, "campaign.conditions[1].top_p", "(0, 1]"),
    ("seed-override", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo", seed = 3 }'),
     5, "campaign.conditions[1].seed", "[campaign].seeds"),
    ("condition-not-table", CAMPAIGN.format(cond='"maxrl+gtpo"'), 5, "campaign.conditions[1]", "expected a table"),
    ("unsafe-label", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo", log_dir = "a/b" }'),
     5, "campaign.conditions[1]", "safe directory name"),
    ("empty-conditions", "[campaign]\nconditions = []\n", 2, "campaign.conditions", "non-empty"),
    ("campaign-max-steps-zero", "[campaign]\nmax_steps = 0\n", 2, "campaign.max_steps", "positive"),
    ("negative-workers", "[campaign]\nmax_workers = -1\n", 2, "campaign.max_workers", ">= 0"),
    ("negative-stagger", "[campaign]\nstagger_seconds = -1.5\n", 2, "campaign.stagger_seconds", ">= 0"),
    ("parallel-string", "[campaign]\nparallel = \"yes\"\n", 2, "campaign.parallel", "boolean"),
    ("target-ranks-dup", "[squeeze]\ntarget_ranks = [4, 4]\n", 2, "squeeze.target_ranks[1]", "duplicate rank"),
    ("retention-range", "[squeeze]\nmin_variance_retention = 1.2\n", 2, "squeeze.min_variance_retention", "(0, 1]"),
    ("alias-and-grams", "[planning]\ngrams = [\"a\"]\n[logging]\nstrategic_grams = [\"b\"]\n", 4,
     "logging.strategic_grams", "alias"),
    ("aot-condition-missing", ("[campaign]\n[[campaign.conditions]]\nadvantage_mode = \"grpo\"\ntransform_mode = \"none\"\n"
     "[[campaign.conditions]]\nadvantage_mode = \"maxrl\"\n"), 5, "campaign.conditions[1].transform_mode", "missing"),
    ("aot-override-line", ("[campaign]\n[[campaign.conditions]]\nadvantage_mode = \"grpo\"\ntransform_mode = \"none\"\n"
     "\nlr = -1\n"), 6, "campaign.conditions[0].lr", "> 0"),
    ("bad-devices", "[backend]\ndevices = \"gpu:0\"\n", 2, "backend.devices", "cuda:N"),
    ("key-before-any-header", "lr = 1e-5\n[training]\n", 1, "lr", "put it under [training]"),
    ("section-override-not-table", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo", sepa = 3 }'),
     5, "campaign.conditions[1].sepa", "expected a table of [sepa] keys"),
    ("campaign-override", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo", campaign = { seeds = [1] } }'),
     5, "campaign.conditions[1].campaign", "cannot be overridden"),
    ("mode-via-algorithm-table", CAMPAIGN.format(cond='{ advantage_mode = "maxrl", transform_mode = "gtpo", algorithm = { transform_mode = "none" } }'),
     5, "campaign.conditions[1].algorithm.transform_mode", "directly in the condition"),
    ("aot-subtable-override", ("[campaign]\n[[campaign.conditions]]\nadvantage_mode = \"maxrl\"\n"
     "transform_mode = \"gtpo_sepa\"\n[campaign.conditions.sepa]\nsteps = -3\n"), 6,
     "campaign.conditions[0].sepa.steps", ">= 0"),
]


@pytest.mark.parametrize("text,line,key,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_config_is_located(text: str, line: int, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_campaign_text(text, "bad.toml")
    located = [p for p in info.value.problems if p.key == key]
    assert located, f"no problem for {key}: {info.value}"
    assert located[0].line == line, str(info.value)
    assert located[0].file == "bad.toml"
    assert fragment in located[0].message, str(info.value)
    assert str(located[0]).startswith(f"bad.toml:{line}: {key}: ")


def test_enough_malformed_cases() -> None:
    assert len(CASES) >= 30


def test_all_problems_of_a_file_are_reported_together() -> None:
    text = textwrap.dedent("""\
        [campaign]
        seeds = [1, 1]
        conditions = [
          { advantage_mode = "grpo", transform_mode = "nope" },
          { advantage_mode = "maxrl", transform_mode = "gtpo", gtpo_beta = -1 },
        ]
        [training]
        batch_size = 0
        top_p = 3
        [modle]
        x = 1
        """)
    with pytest.raises(ConfigError) as info:
        load_campaign_text(text, "many.toml")
    found = {(p.line, p.key) for p in info.value.problems}
    assert found == {
        (2, "campaign.seeds[1]"),
        (4, "campaign.conditions[0].transform_mode"),
        (5, "campaign.conditions[1].gtpo_beta"),
        (8, "training.batch_size"),
        (9, "training.top_p"),
        (10, "modle"),
    }
    rendered = str(info.value)
    assert rendered.startswith("6 configuration problems:")
    assert rendered.count("many.toml:") == 6


def test_missing_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_campaign(tmp_path / "absent.toml")
    assert info.value.problems == [Problem(str(tmp_path / "absent.toml"), 0, "", "file not found")]


def test_bool_is_not_an_int_but_int_is_a_float() -> None:
    camp = load_campaign_text("[training]\nlr = 1\ntemperature = 2\n")
    assert camp.base.training.lr == 1.0 and isinstance(camp.base.training.lr, float)
    with pytest.raises(ConfigError):
        load_campaign_text("[training]\nbatch_size = false\n")


# -- property-based: random documents and random values into known keys ---------------
toml_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=True),
    st.booleans(), st.text(max_size=12),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)),
    max_leaves=8,
)
KNOWN_KEYS = [(s, k) for s, keys in FIELD_TYPES.items() for k in keys]


def _load(text: str) -> None:
    try:
        load_campaign_text(text, "random.toml")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p.line, int) and p.line >= 0 for p in exc.problems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([s for s, _ in KNOWN_KEYS] + ["extra"]),
                       st.dictionaries(st.sampled_from([k for _, k in KNOWN_KEYS] + ["zzz"]),
                                       toml_values, max_size=4), max_size=4))
def test_random_values_into_known_keys_only_raise_config_error(doc: dict) -> None:
    _load(tomli_w.dumps(doc))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]{}=\"'.,#\n abc123_-tf")), max_size=80))
def test_random_text_only_raises_config_error(text: str) -> None:
    _load(text)


condition_entries = st.dictionaries(
    st.sampled_from(["advantage_mode", "transform_mode", "lr", "gtpo_beta", "sepa_steps", "sepa",
                     "uncertainty_kind", "seed", "campaign", "nonsense", "advantage_params"]),
    toml_values, max_size=5)


@settings(max_examples=150, deadline=None)
@given(st.lists(condition_entries, max_size=4), st.lists(toml_scalars, max_size=4))
def test_random_conditions_only_raise_config_error(conditions: list, seeds: list) -> None:
    _load(tomli_w.dumps({"campaign": {"conditions": conditions, "seeds": seeds}}))
