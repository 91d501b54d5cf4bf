"""The trainer is exact where it must be (#12): sampled log-probs are the policy's whatever
the checkpoint's generation config, every LoRA layer type and a LoRA on lm_head act in
sampling and training alike, no deprecated cache path, PPO epochs, the LR schedule."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from retrain_core.config.schema import Config
from retrain_core.train.backend import LocalBackend

PROMPTS = ["3+4=?", "41-7=? go"]  # different lengths: left padding is exercised


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A tiny random GPT-2 (Conv1D layers) whose generation_config.json sets the processors
    that used to act before our log-prob recorder."""
    from transformers import AutoTokenizer, GenerationConfig, GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("gpt2")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    model.generation_config = GenerationConfig(
        do_sample=True, repetition_penalty=1.3, no_repeat_ngram_size=2, min_p=0.05, top_k=5,
        suppress_tokens=[5, 6, 7],
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_backend(model_dir: Path, targets: list[str], merge: bool = True, **training) -> LocalBackend:
    cfg = Config()
    cfg.model.model, cfg.model.lora_rank, cfg.backend.devices = str(model_dir), 4, "cpu"
    cfg.model.lora_target_modules = targets
    cfg.training.max_tokens, cfg.training.temperature, cfg.training.top_p = 12, 0.9, 1.0
    for key, value in training.items():
        setattr(cfg.training, key, value)
    backend = LocalBackend(cfg)
    backend.merge_for_sampling = merge
    torch.manual_seed(1)
    for name, p in backend.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.3)  # a LoRA that visibly changes the policy
    return backend


def sampled_vs_recomputed(backend: LocalBackend, group_size: int = 3) -> tuple[float, object]:
    torch.manual_seed(2)
    rollouts = backend.sample(PROMPTS, group_size)
    assert rollouts.mask.sum() > 10
    with torch.no_grad():
        lp, _ = backend.forward_logprobs(rollouts, torch.arange(rollouts.mask.shape[0]))
    m = rollouts.mask
    return float((lp[m] - rollouts.logprobs[m]).abs().max()), rollouts


def test_model_generation_config_processors_do_not_touch_rl_sampling(gpt2_dir):
    backend = make_backend(gpt2_dir, ["c_attn"], merge=False)
    gap, _ = sampled_vs_recomputed(backend)
    assert gap < 1e-4, gap  # with the checkpoint's processors active: 0.06 nats
    # suppress_tokens was not applied either: the sampler may pick those ids
    assert backend.model.get_base_model().generation_config.repetition_penalty == 1.3  # put back


@pytest.mark.parametrize("targets", [["c_attn"], ["c_attn", "c_fc", "lm_head"]])
def test_merged_sampling_keeps_conv1d_and_lm_head_lora(gpt2_dir, targets):
    """CPU sampling folds LoRA into the base weights: a Conv1D (GPT-2) target must be folded
    too (it was skipped, then every adapter disabled: 0.6 nats apart)."""
    backend = make_backend(gpt2_dir, targets, merge=True)
    before = [p.detach().clone() for p in backend.model.parameters()]
    if "lm_head" in targets:  # GPT-2 ties lm_head to the embeddings: folding it would change both
        assert backend._merge_plan() is None
    else:
        assert len(backend._merge_plan()) == 2  # c_attn of both layers
    gap, _ = sampled_vs_recomputed(backend)
    assert gap < 1e-4, gap
    assert all(torch.equal(a, b) for a, b in zip(before, backend.model.parameters()))


def test_lora_on_lm_head_acts_in_training(tiny_model_dir):
    """The chunked head used lm_head's raw weight, bypassing a LoRA on lm_head."""
    backend = make_backend(tiny_model_dir, ["q_proj", "v_proj", "lm_head"], merge=False)
    gap, _ = sampled_vs_recomputed(backend)
    assert gap < 1e-4, gap  # training pass without the head's LoRA: far apart


def test_lm_head_lora_receives_gradient(tiny_model_dir):
    backend = make_backend(tiny_model_dir, ["lm_head"], merge=False, lr=1e-2)
    head = {n: p.detach().clone() for n, p in backend.model.named_parameters() if "lm_head" in n and "lora" in n}
    torch.manual_seed(3)
    rollouts = backend.sample(PROMPTS, 2)
    adv = torch.where(rollouts.mask, 1.0, 0.0) * torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None]
    stats = backend.train_step(rollouts, adv)
    assert stats["grad_norm"] > 0
    after = dict(backend.model.named_parameters())
    assert any(not torch.equal(head[n], after[n]) for n in head)


def test_no_deprecated_cache_argument_in_stderr(tiny_model_dir, tmp_path):
    """`past_key_values` is deprecated (removed in a later transformers of our range): its
    warning used to fill every run's stderr.log."""
    script = textwrap.dedent(f"""
        import torch
        from retrain_core.config.schema import Config
        from retrain_core.train.backend import LocalBackend
        cfg = Config()
        cfg.model.model, cfg.model.lora_rank, cfg.backend.devices = {str(tiny_model_dir)!r}, 4, "cpu"
        cfg.training.max_tokens = 6
        backend = LocalBackend(cfg)
        rollouts = backend.sample(["3+4=?", "41-7=?"], 3)
        backend.train_step(rollouts, torch.where(rollouts.mask, 1.0, 0.0) * torch.tensor([1.0, -1.0] * 3)[:, None])
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-W", "always", "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    assert "deprecated" not in done.stderr.lower(), done.stderr[-2000:]


def test_ppo_epochs_move_the_ratio_and_clip_acts(tiny_model_dir):
    one = make_backend(tiny_model_dir, ["q_proj", "v_proj"], merge=False, lr=5e-2, clip_eps=0.05)
    torch.manual_seed(4)
    rollouts = one.sample(PROMPTS, 3)
    adv = torch.where(rollouts.mask, 1.0, 0.0) * torch.tensor([1.0, -1.0] * 3)[:, None]
    stats = one.train_step(rollouts, adv)
    # one on-policy step: the ratio is exactly 1 and clip_eps never acts
    assert (stats["ppo_ratio_mean"], stats["ppo_ratio_max"], stats["ppo_clip_fraction"]) == (1.0, 1.0, 0.0)
    three = make_backend(tiny_model_dir, ["q_proj", "v_proj"], merge=False, lr=5e-2, clip_eps=0.05,
                         ppo_epochs=3)
    stats = three.train_step(rollouts, adv)
    assert stats["ppo_ratio_max"] > 1.05 and stats["ppo_ratio_mean"] != 1.0
    assert 0.0 < stats["ppo_clip_fraction"] <= 1.0


def test_lr_schedules_and_warmup():
    from retrain_core.train.schedule import lr_at

    t = Config().training
    t.lr, t.max_steps, t.warmup_steps = 1.0, 12, 2
    t.lr_schedule = "constant"
    assert [lr_at(s, t) for s in (0, 1, 2, 11)] == [0.5, 1.0, 1.0, 1.0]
    t.lr_schedule = "linear"
    assert [lr_at(s, t) for s in (0, 1, 2, 7, 11)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.1])
    t.lr_schedule = "cosine"
    assert [lr_at(s, t) for s in (2, 7, 11)] == pytest.approx([1.0, 0.5, 0.5 * (1 + np.cos(np.pi * 0.9))])
    assert all(lr_at(s, t) > 0 for s in range(12))


def test_heldout_evaluation_leaves_every_random_stream_alone(tiny_model_dir):
    """evaluate.py restored only the CPU torch generator; the CUDA ones (and Python's,
    NumPy's) are restored too now: the rng_state of checkpoints, all of it."""
    from retrain_core.tasks.data import heldout_examples
    from retrain_core.train.evaluate import heldout_accuracy

    backend = make_backend(tiny_model_dir, ["q_proj"], merge=False)
    examples = heldout_examples("arithmetic")[:4]

    class Consuming:  # a sampler that also draws from Python's and NumPy's generators
        tokenizer = backend.tokenizer

        def sample(self, *args, **kwargs):
            random.random(), np.random.rand()
            return backend.sample(*args, **kwargs)

    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    heldout_accuracy(Consuming(), examples, "{question}", temperature=1.0, max_tokens=4, seed=9)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    if torch.cuda.is_available():  # on a GPU machine: the CUDA generator too
        torch.cuda.manual_seed_all(5)
        state = torch.cuda.get_rng_state_all()
        heldout_accuracy(Consuming(), examples, "{question}", temperature=1.0, max_tokens=4, seed=9)
        assert all(torch.equal(a, b) for a, b in zip(state, torch.cuda.get_rng_state_all()))


RESUME_TOML = """
[model]
model = "builtin:tiny-arith"
lora_rank = 4
[backend]
devices = "cpu"
[training]
seed = 3
max_steps = {max_steps}
batch_size = 2
group_size = 4
max_tokens = 12
lr = {lr}
lr_schedule = "linear"
warmup_steps = 2
save_every = 1
[data]
source = "arithmetic"
"""


def test_lr_schedule_resumes_exactly_and_a_changed_config_wins_loudly(tmp_path, capsys):
    import json

    from retrain_core.config import load_config
    from retrain_core.train.loop import Trainer
    from retrain_core.train.schedule import lr_at

    def run(max_steps: int, lr: float) -> list[dict]:
        path = tmp_path / "run.toml"
        path.write_text(RESUME_TOML.format(max_steps=max_steps, lr=lr))
        cfg = load_config(path)
        assert Trainer(cfg, tmp_path / "out", "r", "maxrl+gtpo_sepa", config_dir=tmp_path).run() == 0
        lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    first = run(max_steps=2, lr=0.01)
    assert [m["lr"] for m in first] == pytest.approx([0.005, 0.01])  # warm-up step, then the schedule
    state = json.loads((tmp_path / "out" / "final" / "trainer_state.json").read_text())
    assert state["lr_schedule"] == {"lr": 0.01, "lr_schedule": "linear", "warmup_steps": 2, "max_steps": 2}
    capsys.readouterr()
    # The campaign is extended and the LR raised: the config wins, and the log says so.
    second = run(max_steps=4, lr=0.02)
    out = capsys.readouterr().out
    assert "LR schedule changed" in out and "the config wins" in out and "lr 0.01 -> 0.02" in out
    cfg = load_config(tmp_path / "run.toml")
    assert [m["step"] for m in second] == [0, 1, 2, 3]
    assert [m["lr"] for m in second[2:]] == pytest.approx([lr_at(2, cfg.training), lr_at(3, cfg.training)])
    assert [m["lr"] for m in second] == pytest.approx([0.005, 0.01, 0.02, 0.01])  # resumed at step 2


def test_group_size_one_is_refused_naming_the_key(tmp_path):
    from retrain_core.config import ConfigError, load_config

    path = tmp_path / "g.toml"
    path.write_text("[training]\nbatch_size = 2\ngroup_size = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problem = next(p for p in info.value.problems if p.key == "training.group_size")
    assert problem.line == 3 and ">= 2" in problem.message
    path.write_text('[training]\nlr_schedule = "cosine "\nppo_epochs = 0\nwarmup_steps = -1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert {p.key for p in info.value.problems} >= {"training.lr_schedule", "training.ppo_epochs",
                                                     "training.warmup_steps"}


def test_reward_module_colon_path_works_and_leaves_sys_path_alone(tmp_path):
    from retrain_core.config import load_config
    from retrain_core.train.rewards import resolve_reward

    pkg = tmp_path / "myrewards"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("BONUS = 1.0\n")
    (pkg / "scoring.py").write_text("from myrewards.helper import BONUS\n\n"
                                    "def exact(c, a):\n    return BONUS if c.strip() == a else 0.0\n")
    (tmp_path / "r.toml").write_text('[reward]\ntype = "myrewards.scoring:exact"\n')
    assert load_config(tmp_path / "r.toml").reward.type == "myrewards.scoring:exact"  # validates
    before = list(sys.path)
    fn = resolve_reward("myrewards.scoring:exact", tmp_path)
    assert fn(" 7", "7") == 1.0 and fn("8", "7") == 0.0
    assert sys.path == before  # the reward module's folder is not left on sys.path
    (tmp_path / "bad.toml").write_text('[reward]\ntype = "myrewards.scoring:"\n')
    from retrain_core.config import ConfigError

    with pytest.raises((ConfigError, ValueError)):
        load_config(tmp_path / "bad.toml")
        resolve_reward("myrewards.scoring:", tmp_path)


def test_paired_difference_and_seed_interval_vectors():
    from retrain_core.train.evaluate import mean_interval, paired_difference

    before = [True] * 50 + [False] * 50
    after = [True] * 50 + [True] * 10 + [False] * 40  # 10 of 100 flipped to correct
    change, low, high = paired_difference(before, after)
    assert change == pytest.approx(0.10)
    half = 1.96 * (0.1 * 0.9 / 99) ** 0.5  # d ∈ {0, 1}: variance p(1 − p), sample-corrected
    assert (low, high) == pytest.approx((0.10 - half, 0.10 + half))
    mean, low, high = mean_interval([0.08, 0.10, 0.12])
    assert mean == pytest.approx(0.10) and high - mean == pytest.approx(4.303 * 0.02 / 3 ** 0.5)
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])


def test_first_epoch_gradient_is_whole_with_clipping_on():
    """At ratio 1 (every token of the first epoch) both PPO branches tie; the gradient must
    be the full −A/N (torch.minimum would split it in half between the branches)."""
    from retrain_core.train.logprobs import policy_loss

    lp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0], [-2.0, 0.5]])
    active = torch.ones(2, 2, dtype=torch.bool)
    policy_loss(lp, lp.detach(), adv, active, 4, clip_eps=0.2).backward()
    assert torch.allclose(lp.grad, -adv / 4)
