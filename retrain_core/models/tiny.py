"""The built-in tiny model (`builtin:tiny-arith`): an offline causal LM that RL can move.

A char-level tokenizer (the `tokenizers` library, wrapped in PreTrainedTokenizerFast) and a
small Llama-architecture model, warm-started with a short seeded supervised run on the
arithmetic task. Every target restates the problem and computes it ("12+3=15"); only some
then put the answer in `\\boxed{}` (the others stop, and score 0), so the model starts at a
middling sampled accuracy with a habit that RL can fix on any problem: reward signal and
room to improve. Some targets say "let me check" before the box, so planning-token
transforms (HICRA, SEPA) have tokens to act on.

Built once into `$RETRAIN_CACHE` (or ~/.cache/retrain) under a file lock, written into a
temporary directory and renamed into place, so concurrent builders never see half a model.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path

BUILTIN_NAME = "builtin:tiny-arith"
MODEL_VERSION = "tiny-arith-v3"  # bump when the recipe changes: a new cache entry is built
PROMPT_TEMPLATE = "{question}\n\nPut your final answer within \\boxed{{}}."
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]

# Warm-start recipe (seeded; CPU fp32 on a fixed 2 threads, so every build on a machine
# gives the same weights (here bit-identical to a 1-thread build), in about a minute on
# 2 idle cores).
BUILD_THREADS = 2
WARM_SEED = 1234
WARM_STEPS = 600
WARM_BATCH = 32
WARM_LR = 3e-3
CORRECT_TARGET_FRACTION = 1.0  # below 1, the rest carry a nearby wrong answer
BOXED_TARGET_FRACTION = 0.6  # the rest forget the box: a habit RL can unlearn on any problem
PLANNING_TARGET_FRACTION = 0.3


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("RETRAIN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "retrain"


def ensure_tiny_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the cached tiny model, building it first when absent (safe across processes)."""
    from filelock import FileLock

    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / MODEL_VERSION
    if (target / "config.json").exists():
        return target
    with FileLock(str(root / f"{MODEL_VERSION}.lock")):
        if (target / "config.json").exists():  # another process built it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_VERSION}-", dir=root))
        try:
            build_tiny_model(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared
            try:
                os.replace(tmp, target)
            except OSError:
                # Someone put a model there without the lock (e.g. a copied cache): keep theirs.
                if not (target / "config.json").exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> str:
    """`builtin:tiny-arith` → the cached directory; anything else unchanged."""
    if name == BUILTIN_NAME:
        return str(ensure_tiny_model())
    if name.startswith("builtin:"):
        raise ValueError(f"unknown built-in model {name!r} (available: {BUILTIN_NAME})")
    return name


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Every character is its own token, newlines and spaces included.
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", padding_side="left", clean_up_tokenization_spaces=False,
    )
    return tok


def _warm_target(problem, rng: random.Random) -> str:
    answer = int(problem.answer)
    if rng.random() >= CORRECT_TARGET_FRACTION:
        answer = max(0, answer + rng.choice([-10, -2, -1, 1, 2, 10]))
    # Restating the problem first puts the operands right before the answer digits, which a
    # tiny model learns far faster than attending back across the instruction.
    work = f"{problem.question[:-2]}={answer}"
    box = "\\boxed{" + str(answer) + "}"
    if rng.random() < PLANNING_TARGET_FRACTION:
        return f"{work}, let me check {box}"
    return f"{work} {box}" if rng.random() < BOXED_TARGET_FRACTION else work


def build_tiny_model(out_dir: str | os.PathLike, steps: int = WARM_STEPS) -> Path:
    """Build tokenizer + model and warm-start it; deterministic for a given recipe."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from retrain_core.train.arithmetic import all_problems

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(SPECIALS) + len(CHARS), hidden_size=128, intermediate_size=384,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    started = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)  # fixed: the same weights whatever the core count
    try:
        with torch.random.fork_rng():
            torch.manual_seed(WARM_SEED)
            model = LlamaForCausalLM(config)
            _warm_start(model, tok, all_problems("train"), steps)
    finally:
        torch.set_num_threads(threads)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "BUILD_INFO.txt").write_text(
        f"{MODEL_VERSION}: {steps} warm-start steps, {time.time() - started:.1f}s\n")
    return out


def _warm_start(model, tok, problems, steps: int) -> None:
    import torch

    rng = random.Random(WARM_SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=WARM_LR, betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * (1 - s / steps))
    model.train()
    for _ in range(steps):
        batch = [rng.choice(problems) for _ in range(WARM_BATCH)]
        prompts = [tok.bos_token + PROMPT_TEMPLATE.format(question=p.question) for p in batch]
        targets = [_warm_target(p, rng) + tok.eos_token for p in batch]
        ids, labels = [], []
        for prompt, target in zip(prompts, targets):
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            t_ids = tok(target, add_special_tokens=False)["input_ids"]
            ids.append(p_ids + t_ids)
            labels.append([-100] * len(p_ids) + t_ids)  # loss on the completion only
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), tok.pad_token_id)
        label_t = torch.full((len(ids), width), -100)
        attn = torch.zeros((len(ids), width), dtype=torch.long)
        for i, (x, y) in enumerate(zip(ids, labels)):
            input_ids[i, : len(x)] = torch.tensor(x)
            label_t[i, : len(y)] = torch.tensor(y)
            attn[i, : len(x)] = 1
        loss = model(input_ids=input_ids, attention_mask=attn, labels=label_t).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
