"""One RL step of the campaign we size for, measured: Qwen3-4B shape, LoRA 128, B=8, G=16.

    .venv/bin/python bench/gpu_step.py [--tokens 1024,2048,4096] [--out gpu_step.json]
    .venv/bin/python bench/gpu_step.py --model-config bench/configs/qwen3-tiny.json \\
        --device cpu --dtype float32 --batch 2 --group 2 --tokens 8,16 --rank 4   # a CPU dry run

The model is built from a config kept in the repo (bench/configs/qwen3-4b.json, no download)
with random weights in bf16, saved once to a temporary folder with a synthetic word-level
tokenizer of the same vocabulary, and trained through the real `LocalBackend` (the code a
campaign runs): LoRA on all linear layers, chunked sampling, token-budget micro-batches,
activation checkpointing. Random weights almost never emit EOS, so every completion runs
to `max_tokens`: a worst case.

Per completion length it reports sampling and training time, completion tokens/s, peak
GPU memory (allocated / reserved) of each phase, the sampling chunks and micro-batches used,
and model FLOP utilisation (MFU: model FLOPs / (time × --peak-tflops); sampling 2·N per
token, LoRA training 4·N per token — no base-weight gradients — plus attention, recompute
not counted). It then fits the memory model (KV bytes per token from the sampling peaks,
activation bytes per token from the training peaks) and says whether --target-tokens
(10,240) fits a --card-gb (80) card, and with which chunk and micro-batch sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
GIB = 2**30


def build_model_folder(config_path: Path, dtype, device: str, folder: Path) -> int:
    """Random-weight model + a word-level tokenizer ("t0" … "tV-1") saved to `folder`;
    returns the parameter count."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    spec = json.loads(config_path.read_text())
    config = AutoConfig.for_model(**spec)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    params = sum(p.numel() for p in model.parameters())
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(folder)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the backend loads its own copy
    vocab = {f"t{i}": i for i in range(config.vocab_size)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="t0", pad_token="t0",
                                  eos_token=f"t{config.eos_token_id}")
    tok.save_pretrained(folder)
    return params


def make_cfg(args, folder: Path, max_tokens: int):
    from retrain_core.config.schema import Config

    cfg = Config()
    cfg.model.model, cfg.model.lora_rank, cfg.model.dtype = str(folder), args.rank, args.dtype
    cfg.backend.devices = args.device
    t = cfg.training
    t.batch_size, t.group_size, t.max_tokens, t.temperature, t.top_p = args.batch, args.group, max_tokens, 1.0, 1.0
    t.activation_checkpointing = args.checkpointing
    t.micro_batch_tokens = args.micro_batch_tokens
    cfg.inference.sampling_memory_gb = args.sampling_gb
    return cfg


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peaks(device: str) -> tuple[float | None, float | None]:
    import torch

    if not device.startswith("cuda"):
        return None, None
    out = torch.cuda.max_memory_allocated() / GIB, torch.cuda.max_memory_reserved() / GIB
    torch.cuda.reset_peak_memory_stats()
    return out


def measure(args, backend, spec: dict, params: int, max_tokens: int) -> dict:
    """One sampling + one training step at `max_tokens`, timed and with memory peaks."""
    import torch

    from retrain_core.train import memory

    backend.cfg.training.max_tokens = max_tokens
    rng = torch.Generator().manual_seed(max_tokens)
    prompts = [" ".join(f"t{int(i)}" for i in torch.randint(10, spec["vocab_size"], (args.prompt_tokens,), generator=rng))
               for _ in range(args.batch)]
    dtype_bytes = memory.DTYPE_BYTES[args.dtype]
    row_bytes = memory.sampling_bytes_per_row(backend.model.config, dtype_bytes, args.prompt_tokens, max_tokens)
    chunks = memory.sampling_chunks(args.batch, args.group, row_bytes,
                                    memory.sampling_budget_bytes(backend.cfg.inference, backend.device))
    peaks(args.device)
    sync(args.device)
    started = time.time()
    rollouts = backend.sample(prompts, args.group)
    sync(args.device)
    sample_s = time.time() - started
    sample_alloc, sample_reserved = peaks(args.device)
    n = args.batch * args.group
    generated = int(rollouts.mask.sum())
    adv = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)[:, None] * rollouts.mask.float().cpu()
    micro = backend._micro_batches(rollouts, torch.arange(n, device=backend.device))
    started = time.time()
    stats = backend.train_step(rollouts, adv)
    sync(args.device)
    train_s = time.time() - started
    train_alloc, train_reserved = peaks(args.device)
    heads_dim = spec["num_attention_heads"] * spec.get("head_dim", spec["hidden_size"] // spec["num_attention_heads"])
    ctx = args.prompt_tokens + max_tokens / 2  # mean context a generated token attends to
    attention = 4 * spec["num_hidden_layers"] * heads_dim * ctx
    flops = generated * (2 * params + attention) + generated * 2 * (2 * params + attention)
    return {
        "max_tokens": max_tokens, "rows": n, "prompt_tokens": args.prompt_tokens,
        "generated_tokens": generated, "hit_max_tokens_rate": float(rollouts.hit_max_tokens.float().mean()),
        "sampling_s": sample_s, "training_s": train_s, "step_s": sample_s + train_s,
        "tokens_per_s": generated / (sample_s + train_s),
        "sampling_chunks": len(chunks), "rows_per_chunk": max(c[1] * c[2] for c in chunks),
        "micro_batches": len(micro), "rows_per_micro_batch": max(len(m) for m in micro),
        "sampling_peak_allocated_gb": sample_alloc, "sampling_peak_reserved_gb": sample_reserved,
        "training_peak_allocated_gb": train_alloc, "training_peak_reserved_gb": train_reserved,
        "mfu": flops / ((sample_s + train_s) * args.peak_tflops * 1e12),
        "grad_norm": stats["grad_norm"], "loss": stats["loss"],
    }


def fit(args, rows: list[dict], spec: dict, weights_gb: float) -> dict:
    """Per-token memory from the measured peaks; whether --target-tokens fits --card-gb."""
    from types import SimpleNamespace

    from retrain_core.train import memory

    config = SimpleNamespace(**spec)
    kv_est = memory.kv_bytes_per_token(config, memory.DTYPE_BYTES[args.dtype])
    out = {"weights_gb": weights_gb, "kv_bytes_per_token_estimate": kv_est}
    measured = [r for r in rows if r["sampling_peak_allocated_gb"] is not None]
    if not measured:
        return {**out, "note": "no GPU peaks (CPU run): the fit needs a GPU"}
    per_kv = [(r["sampling_peak_allocated_gb"] - weights_gb) * GIB
              / (r["rows_per_chunk"] * (r["prompt_tokens"] + r["max_tokens"])) for r in measured]
    per_act = [(r["training_peak_allocated_gb"] - weights_gb) * GIB
               / (r["rows_per_micro_batch"] * (r["prompt_tokens"] + r["max_tokens"])) for r in measured]
    kv_fit, act_fit = max(per_kv), max(per_act)  # the worst length: conservative
    target, card = args.target_tokens, args.card_gb * GIB
    row_tokens = args.prompt_tokens + target
    free = card - weights_gb * GIB - 2 * GIB  # 2 GiB for the CUDA context and fragments
    rows_sampling = int(free // (row_tokens * kv_fit))
    rows_training = int(free // (row_tokens * act_fit))
    fits = rows_sampling >= 1 and rows_training >= 1
    return {**out, "kv_bytes_per_token_measured": kv_fit, "training_bytes_per_token_measured": act_fit,
            "target_tokens": target, "card_gb": args.card_gb, "fits": fits,
            "rows_per_sampling_chunk_at_target": rows_sampling, "rows_per_micro_batch_at_target": rows_training,
            "sampling_chunks_at_target": -(-args.batch * args.group // max(rows_sampling, 1)),
            "unchunked_sampling_gb_at_target": (weights_gb * GIB + args.batch * args.group * row_tokens * kv_fit) / GIB}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-config", default=str(REPO / "bench" / "configs" / "qwen3-4b.json"))
    ap.add_argument("--tokens", default="1024,2048,4096")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--checkpointing", default="auto")
    ap.add_argument("--micro-batch-tokens", type=int, default=0, help="0: from free GPU memory")
    ap.add_argument("--sampling-gb", type=float, default=0.0, help="0: from free GPU memory")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    ap.add_argument("--target-tokens", type=int, default=10240)
    ap.add_argument("--card-gb", type=float, default=80.0)
    ap.add_argument("--budget-s", type=float, default=0.0, help="skip a length whose projected time exceeds this")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import torch

    from retrain_core.train.backend import LocalBackend

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[args.dtype]
    spec = json.loads(Path(args.model_config).read_text())
    lengths = [int(x) for x in args.tokens.split(",")]
    results, skipped, started = [], [], time.time()
    with tempfile.TemporaryDirectory(prefix="gpu_step_") as tmp:
        t0 = time.time()
        params = build_model_folder(Path(args.model_config), dtype, args.device, Path(tmp))
        backend = LocalBackend(make_cfg(args, Path(tmp), lengths[0]))
        weights_gb = (torch.cuda.memory_allocated() / GIB) if args.device.startswith("cuda") else None
        print(f"model {Path(args.model_config).name}: {params / 1e9:.2f} B parameters, {args.dtype}, LoRA rank "
              f"{args.rank}, checkpointing={backend.checkpointing}, built and loaded in {time.time() - t0:.0f} s",
              flush=True)
        last = None
        for length in lengths:
            if args.budget_s and last is not None:
                projected = last["step_s"] * (length / last["max_tokens"]) * 1.3
                if time.time() - started + projected > args.budget_s:
                    skipped.append(length)
                    print(f"{length} tokens: skipped (projected {projected:.0f} s exceeds --budget-s)", flush=True)
                    continue
            row = measure(args, backend, spec, params, length)
            results.append(row)
            last = row
            print(json.dumps(row), flush=True)
    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
              "torch": torch.__version__, "params": params, "batch": args.batch, "group": args.group,
              "rank": args.rank, "results": results, "skipped_tokens": skipped,
              "memory_model": fit(args, results, spec, weights_gb or 0.0),
              "note": "random weights: no EOS, every completion runs to max_tokens (a worst case)"}
    print(json.dumps(report["memory_model"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
