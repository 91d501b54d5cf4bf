"""The sampling loop that drops ended rows (`retrain_core.train.decode`), against the real
tiny model and transformers' own `generate` as the reference."""

from __future__ import annotations

import pytest
import torch

from retrain_core.tasks.data import render_prompt
from retrain_core.train.decode import pick_next, sample_rows

TEMPLATE = "{question}\n\nPut your final answer within \\boxed{{}}."
QUESTIONS = ("3+4=?", "41-7=?", "123+456=?", "8*9=?")  # different lengths: left padding


@pytest.fixture(scope="module")
def model_and_batch(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [render_prompt(tok, TEMPLATE, q) for q in QUESTIONS for _ in range(3)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return model, tok, enc["input_ids"], enc["attention_mask"]


def until_eos(ids: torch.Tensor, eos: int) -> list[list[int]]:
    rows = []
    for row in ids.tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def run(model, tok, ids, mask, **kw) -> object:
    settings = {"max_new_tokens": 40, "eos_ids": [tok.eos_token_id], "pad_id": tok.pad_token_id,
                "temperature": 0.0, "top_p": 1.0, "want_entropy": False}
    return sample_rows(model, ids, mask, **(settings | kw))


def test_greedy_rows_equal_transformers_generate(model_and_batch):
    model, tok, ids, mask = model_and_batch
    ours = run(model, tok, ids, mask)
    with torch.no_grad():
        reference = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=40, do_sample=False,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    reference = reference[:, ids.shape[1]:]
    assert until_eos(ours.completion_ids, tok.eos_token_id) == until_eos(reference, tok.eos_token_id)


def test_ended_rows_leave_the_batch(model_and_batch):
    """Rows that ended are no longer run through the model: later forward passes see fewer
    rows, and an ended row is padding with log-prob 0 from its EOS on."""
    model, tok, ids, mask = model_and_batch
    batch_sizes: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        torch.manual_seed(0)
        out = run(model, tok, ids, mask, temperature=1.0, max_new_tokens=60)
    finally:
        hook.remove()
    lengths = [len(r) for r in until_eos(out.completion_ids, tok.eos_token_id)]
    assert min(lengths) < max(lengths), lengths  # rows of different lengths, so some end early
    assert batch_sizes[0] == ids.shape[0] and batch_sizes[-1] < ids.shape[0], batch_sizes
    assert batch_sizes == sorted(batch_sizes, reverse=True)
    for row, length in enumerate(lengths):
        assert (out.completion_ids[row, length:] == tok.pad_token_id).all()
        assert (out.logprobs[row, length:] == 0).all() and (out.logprobs[row, :length] < 0).all()
    assert out.steps == max(lengths)


def test_nucleus_keeps_the_top_token_and_records_the_full_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 5.0]])
    torch.manual_seed(0)
    for _ in range(20):  # a nucleus this small holds only the most likely token
        token, logp, entropy = pick_next(logits, temperature=0.7, top_p=0.05, want_entropy=True)
        assert token.tolist() == [0, 3]
    full = torch.log_softmax(logits / 0.7, dim=-1)
    assert torch.allclose(logp, full[[0, 1], [0, 3]])  # of the temperature-scaled, uncut distribution
    assert torch.allclose(entropy, -(full.exp() * full).sum(-1))
    seen = {int(pick_next(logits[:1], 1.0, 0.9, False)[0]) for _ in range(200)}
    assert seen == {0, 1, 2}  # 0.64 + 0.24 < 0.9: the third most likely token is in, the last is out
