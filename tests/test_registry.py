"""One registry (#10 item 2): aliases, dotted paths and `retrain.plugins` entry points are
accepted (or refused) alike by the config loader, the advantage pipeline and the trainer."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from retrain_core.advantages import canonical_uncertainty_kind, compute_advantages
from retrain_core.config import ConfigError, load_campaign_text
from retrain_core.registry import REGISTRY, PluginError
from retrain_core.tasks.data import load_examples
from retrain_core.train.rewards import resolve_reward

# Every alias the docs or the reference implementation (teilomillet/retrain) accept.
ALIASES = {
    "token_surprisal": "surprisal", "nll": "surprisal", "neg_logprob": "surprisal",
    "negative_logprob": "surprisal", "surprise": "surprisal",
    "token_entropy": "shannon_entropy", "shannon": "shannon_entropy", "entropy": "shannon_entropy",
    "pred_var": "predictive_variance", "bernoulli_variance": "predictive_variance",
    "variance": "predictive_variance", "Shannon-Entropy": "shannon_entropy",
}


def batch():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    group_ids = torch.tensor([0, 0, 1, 1])
    logprobs = -torch.rand(4, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 3, dtype=torch.bool)
    return rewards, group_ids, logprobs, mask, torch.zeros(4, 3, dtype=torch.bool)


@pytest.mark.parametrize(("alias", "canonical"), sorted(ALIASES.items()))
def test_every_alias_works_in_the_loader_and_the_pipeline(alias, canonical):
    camp = load_campaign_text(f'[algorithm]\nuncertainty_kind = "{alias}"\n', "c.toml")
    assert camp.base.algorithm.uncertainty_kind == canonical  # run configs carry the canonical name
    assert canonical_uncertainty_kind(alias) == canonical
    entropies = torch.rand(4, 3, generator=torch.Generator().manual_seed(1))
    a = compute_advantages(*batch(), uncertainty_kind=alias, entropies=entropies)
    b = compute_advantages(*batch(), uncertainty_kind=canonical, entropies=entropies)
    assert torch.equal(a.token_advantages, b.token_advantages)


@pytest.mark.parametrize("name", ["varentropy", "surprisals", "tokenentropy"])
def test_unknown_uncertainty_is_refused_everywhere(name):
    with pytest.raises(ConfigError, match="algorithm.uncertainty_kind"):
        load_campaign_text(f'[algorithm]\nuncertainty_kind = "{name}"\n', "c.toml")
    with pytest.raises(ValueError, match="uncertainty_kind"):
        compute_advantages(*batch(), uncertainty_kind=name)


@pytest.fixture
def installed_plugins(tmp_path, monkeypatch):
    """A real installed distribution (dist-info with entry points) on sys.path."""
    (tmp_path / "acme_rl").mkdir()
    (tmp_path / "acme_rl" / "__init__.py").write_text(textwrap.dedent("""\
        import torch

        def exact(completion, answer):
            return 1.0 if completion.strip() == answer else 0.0

        def sign_adv(rewards, group_ids, params):
            return torch.sign(rewards - 0.5)

        def squares(argument=""):
            n = int(argument or 3)
            return [{"prompt": f"{i}*{i}=?", "answer": str(i * i)} for i in range(n)]
        """))
    dist = tmp_path / "acme_rl-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rl\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [retrain.plugins]
        reward.exact = acme_rl:exact
        advantage.sign = acme_rl:sign_adv
        data_source.squares = acme_rl:squares
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("acme_rl", None)


def test_entry_points_resolve_in_loader_trainer_and_pipeline(installed_plugins):
    camp = load_campaign_text('[reward]\ntype = "exact"\n[algorithm]\nadvantage_mode = "sign"\n'
                              '[data]\nsource = "squares:4"\n', "c.toml")
    assert camp.base.reward.type == "exact"
    assert resolve_reward("exact")("4", "4") == 1.0
    assert [e.answer for e in load_examples("squares:4")] == ["0", "1", "4", "9"]
    out = compute_advantages(*batch(), advantage_mode="sign", transform_mode="none")
    assert out.episode_advantages.tolist() == [1.0, -1.0, 1.0, -1.0]
    assert "exact" in REGISTRY.names("reward")


def test_unregistered_names_are_refused_by_every_layer():
    with pytest.raises(ConfigError, match='reward.type: expected one of "boxed"'):
        load_campaign_text('[reward]\ntype = "exact"\n', "c.toml")
    with pytest.raises(ValueError, match="unknown reward 'exact'"):
        resolve_reward("exact")
    with pytest.raises(PluginError, match="unknown advantage 'sign'"):
        REGISTRY.resolve("advantage", "sign")


def test_dotted_path_both_spellings_and_a_plugin_package(tmp_path: Path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "rewards.py").write_text("def half(c, a):\n    return 0.5\n")
    for value in ("pkg.rewards.half", "pkg.rewards:half"):
        load_campaign_text(f'[reward]\ntype = "{value}"\n', tmp_path / "c.toml")
        assert resolve_reward(value, tmp_path)("x", "y") == 0.5


def test_unavailable_builtin_backend_is_a_launch_problem_not_a_load_error():
    camp = load_campaign_text('[backend]\nbackend = "tinker"\n', "c.toml")
    assert camp.base.backend.backend == "tinker"
    assert REGISTRY.builtin("backend", "local") is not None
