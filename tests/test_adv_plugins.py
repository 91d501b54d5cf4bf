"""Dotted-path plugins for advantage_mode, uncertainty_kind, transform_mode, algorithm_mode."""

from __future__ import annotations

import textwrap

import pytest
import torch

from retrain_core.advantages import AdvantageOutput, compute_advantages

# The worked example of the README, verbatim: a file next to the config.
EXAMPLE_PLUGIN = textwrap.dedent('''
    """my_plugins.py: lives next to campaign.toml."""
    import torch

    from retrain_core.advantages import AdvantageOutput, compute_advantages


    def rank_advantages(rewards, group_ids, params):
        """advantage_mode = "my_plugins.rank_advantages": +scale above the group mean, -scale below."""
        scale = float(params.get("scale", 1.0))
        _, index = torch.unique(group_ids, return_inverse=True)
        sums = torch.zeros(int(index.max()) + 1, dtype=rewards.dtype).index_add_(0, index, rewards)
        counts = torch.bincount(index).to(rewards.dtype)
        return scale * torch.sign(rewards - (sums / counts)[index])


    def confidence(logprobs, mask, entropies):
        """uncertainty_kind = "my_plugins.confidence": 1 - p of the sampled token."""
        return 1.0 - torch.exp(logprobs)


    def front_loaded(episode_adv, uncertainty, mask, planning_mask, params, sepa_lambda):
        """transform_mode = "my_plugins.front_loaded": more credit to early tokens."""
        decay = float(params.get("decay", 0.5))
        position = torch.arange(mask.shape[1], dtype=uncertainty.dtype)
        return episode_adv[:, None] * decay ** position[None, :]


    def doubled(**kwargs):
        """algorithm_mode = "my_plugins.doubled": the whole pipeline, then x2."""
        kwargs.pop("algorithm_mode", None)
        out = compute_advantages(**kwargs)
        return AdvantageOutput(out.token_advantages * 2, out.episode_advantages * 2,
                               out.skipped, out.stats)
''')


@pytest.fixture
def plugin_dir(tmp_path):
    (tmp_path / "my_plugins.py").write_text(EXAMPLE_PLUGIN)
    (tmp_path / "bad_plugins.py").write_text(textwrap.dedent('''
        import torch
        NOT_A_FUNCTION = 3
        def short(rewards, group_ids, params):
            return rewards[:-1]
        def flat(logprobs, mask, entropies):
            return logprobs.sum(dim=1)
        def transposed(episode_adv, uncertainty, mask, planning_mask, params, sepa_lambda):
            return uncertainty.T
        def not_output(**kwargs):
            return 42
    '''))
    (tmp_path / "broken_plugins.py").write_text("raise RuntimeError('boom at import')\n")
    return tmp_path


def batch():
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0, 1.0])
    group_ids = torch.tensor([0, 0, 0, 1, 1, 1])
    logprobs = torch.log(torch.tensor([[0.5, 0.25, 0.9]] * 6))
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[1, 2] = False
    return rewards, group_ids, logprobs, mask


def test_advantage_plugin_with_params(plugin_dir):
    out = compute_advantages(*batch(), advantage_mode="my_plugins.rank_advantages",
                             transform_mode="none", advantage_params={"scale": 2.0}, plugin_dir=plugin_dir)
    assert out.episode_advantages.tolist() == [2.0, -2.0, 0.0, 0.0, 0.0, 0.0]
    assert out.skipped.tolist() == [False] * 3 + [True] * 3  # skip rule still applies
    assert out.token_advantages[1].tolist() == [-2.0, -2.0, 0.0]


def test_uncertainty_plugin_feeds_gtpo_and_stats(plugin_dir):
    out = compute_advantages(*batch(), uncertainty_kind="my_plugins.confidence", transform_mode="gtpo",
                             plugin_dir=plugin_dir)
    assert torch.allclose(out.uncertainty[0], torch.tensor([0.5, 0.75, 0.1]))
    assert out.uncertainty[1, 2] == 0  # padding
    assert out.stats["exec_surprisal_mean"] == pytest.approx((0.5 + 0.75 + 0.1) * 6 / 17 - 0.1 / 17)


def test_transform_plugin_gets_params_and_padding_is_zeroed(plugin_dir):
    out = compute_advantages(*batch(), advantage_mode="grpo", transform_mode="my_plugins.front_loaded",
                             transform_params={"decay": 0.1}, plugin_dir=plugin_dir)
    a = out.episode_advantages[0]
    assert torch.allclose(out.token_advantages[0], torch.stack([a, a * 0.1, a * 0.01]))
    assert out.token_advantages[1, 2] == 0 and torch.all(out.token_advantages[3:] == 0)


def test_algorithm_plugin_replaces_the_pipeline(plugin_dir):
    ref = compute_advantages(*batch())
    out = compute_advantages(*batch(), algorithm_mode="my_plugins.doubled", plugin_dir=plugin_dir)
    assert isinstance(out, AdvantageOutput)
    assert torch.allclose(out.token_advantages, ref.token_advantages * 2)
    assert out.stats == ref.stats


def test_plugin_found_on_sys_path_without_base_dir():
    # Built-ins are importable as plugins too: the dotted path of grpo gives grpo.
    ref = compute_advantages(*batch(), advantage_mode="grpo")
    out = compute_advantages(*batch(), advantage_mode="retrain_core.advantages.episode.grpo_advantages")
    assert torch.equal(out.token_advantages, ref.token_advantages)


def test_colon_form_is_accepted(plugin_dir):
    a = compute_advantages(*batch(), advantage_mode="my_plugins:rank_advantages", plugin_dir=plugin_dir)
    b = compute_advantages(*batch(), advantage_mode="my_plugins.rank_advantages", plugin_dir=plugin_dir)
    assert torch.equal(a.token_advantages, b.token_advantages)


def test_same_module_name_in_two_directories_does_not_collide(tmp_path):
    for name, value in (("a", 1.0), ("b", -1.0)):
        d = tmp_path / name
        d.mkdir()
        (d / "plug.py").write_text(f"import torch\ndef adv(r, g, p):\n    return torch.full_like(r, {value})\n")
    a = compute_advantages(*batch(), advantage_mode="plug.adv", transform_mode="none", plugin_dir=tmp_path / "a")
    b = compute_advantages(*batch(), advantage_mode="plug.adv", transform_mode="none", plugin_dir=tmp_path / "b")
    assert a.episode_advantages[0] == 1.0 and b.episode_advantages[0] == -1.0


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"advantage_mode": "nowhere_module.f"}, r"advantage_mode 'nowhere_module.f'.*module 'nowhere_module' not found"),
        ({"advantage_mode": "my_plugins.missing"}, r"advantage_mode 'my_plugins.missing'.*no function 'missing'"),
        ({"advantage_mode": "bad_plugins.NOT_A_FUNCTION"}, "not callable"),
        ({"advantage_mode": "bad_plugins.short"}, r"advantage_mode 'bad_plugins.short' returned shape \(5,\), expected \(6,\)"),
        ({"uncertainty_kind": "bad_plugins.flat"}, r"uncertainty_kind 'bad_plugins.flat' returned shape \(6,\)"),
        ({"transform_mode": "bad_plugins.transposed"}, r"transform_mode 'bad_plugins.transposed' returned shape \(3, 6\)"),
        ({"algorithm_mode": "bad_plugins.not_output"}, r"algorithm_mode 'bad_plugins.not_output' returned int"),
        ({"transform_mode": "broken_plugins.f"}, r"transform_mode 'broken_plugins.f': importing .*broken_plugins.py failed.*boom"),
    ],
)
def test_bad_plugins_are_clear_errors(plugin_dir, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        compute_advantages(*batch(), plugin_dir=plugin_dir, **kwargs)
