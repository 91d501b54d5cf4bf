"""Trainer units: tokenizer round trip, rewards, chunked log-probs, data stream, loss."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from retrain_core.tasks.answers import boxed_reward, last_boxed
from retrain_core.tasks.arithmetic import all_problems
from retrain_core.tasks.data import DataError, DataStream, Example, load_examples, render_prompt
from retrain_core.train.logprobs import policy_loss, token_logprobs
from retrain_core.train.rewards import resolve_reward


def test_tokenizer_round_trip_through_autotokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "12 + 3 =?\n\nPut your final answer within \\boxed{}.\n  two  spaces and end\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids
    assert tok.pad_token and tok.eos_token and tok.bos_token and not tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tok)


@pytest.mark.parametrize(("completion", "answer", "expected"), [
    ("so \\boxed{42}", "42", 1.0),
    ("\\boxed{ 42. }", "42", 1.0),
    ("\\boxed{$42$}", "42", 1.0),
    ("\\boxed{\\left(1,2\\right)}", "(1, 2)", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{2/4}", "1/2", 1.0),
    ("\\boxed{3.0}", "3", 1.0),
    ("\\boxed{-7}", "-7.00", 1.0),
    ("\\boxed{1,000}", "1000", 1.0),
    ("\\boxed{1} then \\boxed{2}", "2", 1.0),   # the last box counts
    ("\\boxed{2} then \\boxed{1}", "2", 0.0),
    ("\\boxed{\\frac{a}{b}}", "\\frac{a}{b}", 1.0),  # nested braces
    ("\\boxed{}", "0", 0.0),                      # empty box
    ("no box at all: 42", "42", 0.0),
    ("\\boxed{42}", "", 0.0),                     # empty reference
    ("\\boxed{43}", "42", 0.0),
])
def test_boxed_reward_vectors(completion, answer, expected):
    assert boxed_reward(completion, answer) == expected


def test_last_boxed_balanced_and_truncated():
    assert last_boxed("\\boxed{a{b}c}") == "a{b}c"
    assert last_boxed("\\boxed{1} and \\boxed{2") == "1"  # cut-off last box falls back
    assert last_boxed("nothing") is None


def test_reward_plugin_resolution(tmp_path):
    (tmp_path / "myreward.py").write_text("def score(c, a):\n    return 1.0 if a in c else 0.0\n")
    fn = resolve_reward("myreward.score", tmp_path)
    assert fn("x 5 y", "5") == 1.0 and fn("x", "5") == 0.0
    with pytest.raises(ValueError, match="no function"):
        resolve_reward("myreward.missing", tmp_path)
    with pytest.raises(ValueError, match="unknown reward"):
        resolve_reward("exact")


def test_chunked_logprobs_match_full_log_softmax():
    torch.manual_seed(0)
    n, t, h, v = 5, 7, 6, 11
    head = torch.nn.Linear(h, v)
    hidden = torch.randn(n, t, h, requires_grad=True)
    targets = torch.randint(0, v, (n, t))
    full = torch.log_softmax(head(hidden) / 0.7, dim=-1)
    want_lp = full.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    want_ent = -(full.exp() * full).sum(-1)
    # chunk_tokens=3: chunks cut across rows; no chunk holds more than [3, V] logits.
    lp, ent = token_logprobs(hidden, head, targets, temperature=0.7, want_entropy=True, chunk_tokens=3)
    assert torch.allclose(lp, want_lp, atol=1e-5) and torch.allclose(ent, want_ent, atol=1e-5)
    # Gradients through the checkpointed chunks equal those of the full computation.
    g1 = torch.autograd.grad(lp.sum(), hidden)[0]
    g2 = torch.autograd.grad(want_lp.sum(), hidden)[0]
    assert torch.allclose(g1, g2, atol=1e-5)


def test_policy_loss_token_mean_and_clip():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, 0.0]])
    active = torch.tensor([[True, True, False], [True, True, True]])
    loss = policy_loss(lp, lp.detach(), adv, active, num_active_tokens=5)
    assert loss.item() == pytest.approx((-1 - 1 + 2 + 2 - 0) / 5)
    loss.backward()
    # d/dlp of -A·exp(lp - sg(lp)) is -A, divided by the step's active token count.
    assert torch.allclose(lp.grad, torch.tensor([[-0.2, -0.2, 0.0], [0.4, 0.4, 0.0]]))
    # PPO clip: a ratio far above 1+eps with A > 0 gets no gradient.
    lp2 = torch.tensor([[0.0]], requires_grad=True)
    clipped = policy_loss(lp2, torch.tensor([[-1.0]]), torch.tensor([[1.0]]), torch.tensor([[True]]), 1, clip_eps=0.2)
    assert clipped.item() == pytest.approx(-1.2)
    clipped.backward()
    assert lp2.grad.item() == 0.0


def test_arithmetic_split_disjoint_and_stream_deterministic():
    train = {p.question for p in all_problems("train")}
    held = {p.question for p in all_problems("heldout")}
    assert held and train and not (train & held)
    examples = load_examples("arithmetic")
    a = DataStream(examples, seed=3)
    first = [a.next_batch(4) for _ in range(3)]
    b = DataStream(examples, seed=3, cursor=4)  # resumed after one batch
    assert [b.next_batch(4) for _ in range(2)] == first[1:]
    assert DataStream(examples, seed=4).next_batch(4) != first[0]


def test_jsonl_source_and_errors(tmp_path):
    good = tmp_path / "d.jsonl"
    good.write_text(json.dumps({"prompt": "1+1?", "answer": "2"}) + "\n\n")
    assert load_examples(f"jsonl:{good}") == [Example("1+1?", "2")]
    assert load_examples("jsonl:d.jsonl", config_dir=tmp_path) == [Example("1+1?", "2")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_examples(f"jsonl:{bad}")
    with pytest.raises(DataError, match="unknown source"):
        load_examples("gsm9k")


def test_prompt_template_and_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = render_prompt(tok, "{question}\n\nPut your final answer within \\boxed{{}}.", "2+2=?")
    assert text == tok.bos_token + "2+2=?\n\nPut your final answer within \\boxed{}."
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}>>"
    assert render_prompt(tok, "Q: {question}", "3") == "<user>Q: 3>>"
    with pytest.raises(DataError, match="prompt_template"):
        render_prompt(tok, "{oops}", "3")


def test_tinker_backend_fails_before_anything(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('[backend]\nbackend = "tinker"\n[data]\nsource = "arithmetic"\n[training]\nseed = 1\n')
    proc = subprocess.run([sys.executable, "-m", "retrain_core.cli", "run", str(cfg), "--run-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "tinker" in proc.stderr and 'backend = "local"' in proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_sampling_logprobs_match_training_pass_with_nonzero_lora(tiny_model_dir):
    from retrain_core.config.schema import Config
    from retrain_core.train.backend import LocalBackend

    cfg = Config()
    cfg.model.model, cfg.model.lora_rank, cfg.backend.devices = str(tiny_model_dir), 4, "cpu"
    cfg.training.max_tokens, cfg.training.temperature, cfg.training.top_p = 16, 0.8, 1.0
    backend = LocalBackend(cfg, want_entropy=True)
    torch.manual_seed(0)
    for name, p in backend.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    before = [p.detach().clone() for p in backend.model.parameters()]
    prompts = [render_prompt(backend.tokenizer, "{question}\n\nPut your final answer within \\boxed{{}}.", q)
               for q in ("3+4=?", "41-7=?")]  # different lengths: left padding is exercised
    rollouts = backend.sample(prompts, 3)
    assert rollouts.completion_ids.shape[0] == 6 and rollouts.mask.any(dim=1).all()
    with torch.no_grad():
        lp, ent = backend.forward_logprobs(rollouts, torch.arange(6), want_entropy=True)
    m = rollouts.mask
    assert torch.allclose(lp[m], rollouts.logprobs[m], atol=1e-4)
    assert torch.allclose(ent[m], rollouts.entropies[m], atol=1e-4)
    assert (rollouts.logprobs[~m] == 0).all()
    # The prompt is run once per group (its KV cache repeated): same values as G full passes.
    backend.share_prompt_pass = False
    with torch.no_grad():
        lp_full, _ = backend.forward_logprobs(rollouts, torch.arange(6))
    backend.share_prompt_pass = True
    assert torch.allclose(lp[m], lp_full[m], atol=1e-5)
    # Sampling folds LoRA into the base weights and must put every tensor back exactly.
    assert all(torch.equal(a, b) for a, b in zip(before, backend.model.parameters()))
    stats = backend.train_step(rollouts, torch.where(m, 1.0, 0.0) * torch.tensor([1, -1] * 3)[:, None])
    assert stats["num_active_tokens"] == int(m.sum()) and stats["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, backend.model.parameters()))


def test_select_run_from_campaign_file(repo_root):
    from retrain_core.config import load_campaign
    from retrain_core.train.cli import select_run

    camp = load_campaign(repo_root / "configs" / "demo.toml")
    cfg, label, name = select_run(camp, "maxrl+gtpo_sepa_s101", None)
    assert (label, name, cfg.training.seed) == ("maxrl+gtpo_sepa", "maxrl+gtpo_sepa_s101", 101)
    assert cfg.training.max_steps == 30 and cfg.model.model == "builtin:tiny-arith"
    assert select_run(camp, None, "grpo+none")[1] == "grpo+none"
    with pytest.raises(ValueError, match="--run-name"):
        select_run(camp, None, None)
    with pytest.raises(ValueError, match="no run named"):
        select_run(camp, "nope_s1", None)
    with pytest.raises(ValueError, match="not a condition"):
        select_run(camp, None, "grpo+gtpo")
