"""Memory budgets (train/memory.py): chunk sizes from a budget, micro-batches from a token
budget, chunked sampling and token-budget micro-batches on the real tiny model, OOM errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from retrain_core.tasks.data import render_prompt
from retrain_core.train import memory

TEMPLATE = "{question}\n\nPut your final answer within \\boxed{{}}."


def qwen3_4b():
    from pathlib import Path

    from transformers import AutoConfig

    path = Path(__file__).resolve().parent.parent / "bench" / "configs" / "qwen3-4b.json"
    return AutoConfig.for_model(**json.loads(path.read_text()))


def test_kv_cache_per_token_of_qwen3_4b_is_144_kib():
    assert memory.kv_bytes_per_token(qwen3_4b(), 2) == 144 * 1024
    # B×G = 128 rows to 10,240 tokens cannot sample in one piece on an 80 GB card ...
    row = memory.sampling_bytes_per_row(qwen3_4b(), 2, 200, 10240)
    assert 128 * row > 80 * memory.GIB
    # ... but in chunks of whole groups it does: 16-row groups, 3 per 72 GB chunk.
    chunks = memory.sampling_chunks(8, 16, row, 72 * memory.GIB)
    assert [c[1] for c in chunks] == [3, 3, 2] and all(c[2] == 16 for c in chunks)


def test_sampling_chunks_from_a_budget():
    assert memory.sampling_chunks(5, 4, 100, None) == [(0, 5, 4)]  # no budget: one chunk
    assert memory.sampling_chunks(5, 4, 100, 10_000) == [(0, 5, 4)]  # it all fits
    # 8 rows fit: two whole groups a chunk.
    assert memory.sampling_chunks(5, 4, 100, 800) == [(0, 2, 4), (2, 2, 4), (4, 1, 4)]
    # Not even one group (3 rows of 8): each group in slices of 3, 3, 2 rows.
    assert memory.sampling_chunks(2, 8, 100, 300) == [(0, 1, 3), (0, 1, 3), (0, 1, 2),
                                                      (1, 1, 3), (1, 1, 3), (1, 1, 2)]
    # Below one row, one row still runs (the OOM error then names the knob).
    assert memory.sampling_chunks(1, 2, 100, 10) == [(0, 1, 1), (0, 1, 1)]


def test_micro_batches_from_a_token_budget():
    rows, groups = list(range(6)), [0, 0, 0, 1, 1, 1]
    lengths = [5, 3, 2, 9, 1, 1]
    assert memory.micro_batches(rows, lengths, 10, groups, None) == [rows]
    # group 0 costs 3 × (10 + 5) = 45, group 1 3 × (10 + 9) = 57: one each under 60
    assert memory.micro_batches(rows, lengths, 10, groups, 60) == [[0, 1, 2], [3, 4, 5]]
    assert memory.micro_batches(rows, lengths, 10, groups, 200) == [rows]
    # under 40 a group does not fit: rows, packed while n × (prompt + longest) fits
    assert memory.micro_batches(rows, lengths, 10, groups, 40) == [[0, 1], [2, 3], [4, 5]]
    # a row larger than the budget runs alone
    assert memory.micro_batches([7], [50], 10, [0], 8) == [[7]]


def test_budgets_and_checkpointing_defaults():
    cpu = torch.device("cpu")
    assert memory.sampling_budget_bytes(SimpleNamespace(sampling_memory_gb=0.0), cpu) is None
    assert memory.sampling_budget_bytes(SimpleNamespace(sampling_memory_gb=1.5), cpu) == int(1.5 * memory.GIB)
    training = SimpleNamespace(micro_batch_tokens=0, activation_checkpointing="auto")
    assert memory.micro_batch_token_budget(training, qwen3_4b(), 2, cpu, True) is None
    training.micro_batch_tokens = 4096
    assert memory.micro_batch_token_budget(training, qwen3_4b(), 2, cpu, True) == 4096
    assert not memory.checkpointing_wanted(training, cpu)
    assert memory.checkpointing_wanted(training, torch.device("cuda"))
    training.activation_checkpointing = "on"
    assert memory.checkpointing_wanted(training, cpu)
    # checkpointing keeps an order of magnitude less per token (Qwen3-4B: ~0.3 vs ~5 MB)
    on = memory.training_bytes_per_token(qwen3_4b(), 2, True)
    off = memory.training_bytes_per_token(qwen3_4b(), 2, False)
    assert on < 0.5 * 2**20 < 4 * 2**20 < off


def tiny_backend(tiny_model_dir, **training):
    from retrain_core.config.schema import Config
    from retrain_core.train.backend import LocalBackend

    cfg = Config()
    cfg.model.model, cfg.model.lora_rank, cfg.backend.devices = str(tiny_model_dir), 4, "cpu"
    cfg.training.max_tokens, cfg.training.temperature, cfg.training.top_p = 16, 0.8, 1.0
    for key, value in training.items():
        setattr(cfg.inference if key == "sampling_memory_gb" else cfg.training, key, value)
    return LocalBackend(cfg, want_entropy=True)


def test_chunked_sampling_and_token_micro_batches_on_the_tiny_model(tiny_model_dir):
    backend = tiny_backend(tiny_model_dir)
    prompts = [render_prompt(backend.tokenizer, TEMPLATE, q) for q in ("3+4=?", "41-7=?", "12+30=?")]
    row = memory.sampling_bytes_per_row(backend.model.config, 4, 20, 16)
    # A budget of 2 rows: groups of 3 are sampled in slices (2 + 1 rows per prompt).
    backend.cfg.inference.sampling_memory_gb = 2.5 * row / memory.GIB
    torch.manual_seed(0)
    rollouts = backend.sample(prompts, 3)
    assert rollouts.completion_ids.shape[0] == 9 and len(rollouts.texts) == 9
    assert rollouts.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert rollouts.prompts == [p for p in prompts for _ in range(3)]
    # chunks were re-padded consistently: every row's log-probs are those of a full pass
    with torch.no_grad():
        lp, ent = backend.forward_logprobs(rollouts, torch.arange(9), want_entropy=True)
    m = rollouts.mask
    assert m.any(dim=1).all()
    assert torch.allclose(lp[m], rollouts.logprobs[m], atol=1e-4)
    assert torch.allclose(ent[m], rollouts.entropies[m], atol=1e-4)
    assert (rollouts.logprobs[~m] == 0).all()
    # Micro-batches by a token budget give the same gradient as one micro-batch.
    adv = torch.where(m, 1.0, 0.0) * torch.tensor([1, -1, 1] * 3)[:, None]
    grads = []
    for tokens in (0, 2 * (rollouts.prompt_ids.shape[1] + 16)):
        backend.cfg.training.micro_batch_tokens = tokens
        chunks = backend._micro_batches(rollouts, torch.arange(9))
        assert (len(chunks) == 1) == (tokens == 0) and sum(len(c) for c in chunks) == 9
        backend.optimizer.zero_grad(set_to_none=True)
        for rows in chunks:
            lp_rows, _ = backend.forward_logprobs(rollouts, rows)
            (lp_rows * adv[rows]).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in backend.params]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_activation_checkpointing_trains_the_same(tiny_model_dir):
    plain, ckpt = tiny_backend(tiny_model_dir), tiny_backend(tiny_model_dir, activation_checkpointing="on")
    assert ckpt.checkpointing and not plain.checkpointing
    ckpt.model.load_state_dict(plain.model.state_dict())
    prompts = [render_prompt(plain.tokenizer, TEMPLATE, q) for q in ("3+4=?", "41-7=?")]
    torch.manual_seed(1)
    rollouts = plain.sample(prompts, 2)
    adv = torch.where(rollouts.mask, 1.0, 0.0) * torch.tensor([1, -1, 1, -1])[:, None]
    stats = [b.train_step(rollouts, adv) for b in (plain, ckpt)]
    assert stats[0]["grad_norm"] > 0
    assert stats[0]["loss"] == pytest.approx(stats[1]["loss"], abs=1e-5)
    assert stats[0]["grad_norm"] == pytest.approx(stats[1]["grad_norm"], rel=1e-4)


def test_out_of_memory_names_phase_step_and_knob():
    from retrain_core.config.schema import Config
    from retrain_core.train.loop import Trainer

    trainer = SimpleNamespace(step=7, cfg=Config())

    def oom(*_a, **_k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(memory.OutOfMemoryInPhase) as sampled:
        Trainer.in_phase(trainer, "sampling", oom)
    assert "while sampling at step 7" in str(sampled.value)
    assert "[inference] sampling_memory_gb" in str(sampled.value)
    trainer.cfg.training.micro_batch_tokens = 8192
    with pytest.raises(memory.OutOfMemoryInPhase) as trained:
        Trainer.in_phase(trainer, "training", oom)
    message = str(trained.value)
    assert "while training at step 7" in message and "micro_batch_tokens (now 8192)" in message
    assert "activation_checkpointing" in message and "Tried to allocate 2.00 GiB" in message
    # Other errors pass through untouched.
    with pytest.raises(ValueError):
        Trainer.in_phase(trainer, "training", lambda: (_ for _ in ()).throw(ValueError("x")))


def test_out_of_memory_is_recorded_as_such(tmp_path):
    from retrain_core.error_record import key, read_error, write_error

    error = memory.oom_error("training", 3, SimpleNamespace(training=SimpleNamespace(
        micro_batch_tokens=0, activation_checkpointing="auto")), torch.OutOfMemoryError("CUDA out of memory"))
    write_error(tmp_path, error)
    record = read_error(tmp_path)
    assert record["type"] == "OutOfMemoryInPhase"
    assert key(record).startswith("OutOfMemoryInPhase: out of memory while training at step 3: "
                                  "lower [training] micro_batch_tokens (now automatic)")


def test_memory_metrics_on_cpu():
    out = memory.memory_metrics()
    assert out["gpu_peak_allocated_mb"] is None and out["gpu_peak_reserved_mb"] is None
    assert 0 < out["host_rss_mb"] <= out["host_peak_rss_mb"] + 1
