"""The built-in tiny model (`builtin:tiny-arith`): an offline causal LM that RL can move.

A char-level tokenizer (the `tokenizers` library, wrapped in PreTrainedTokenizerFast) and a
small Llama-architecture model, warm-started with a short seeded supervised run on the
arithmetic task. Every target restates the problem and computes it ("12+3=15"); only some
then put the answer in `\\boxed{}` (the others stop, and score 0), so the model starts at a
middling sampled accuracy with a habit that RL can fix on any problem: reward signal and
room to improve. Some targets say "let me check" before the box, so planning-token
transforms (HICRA, SEPA) have tokens to act on.

The model is data, not a build step: its weights and tokenizer (about 1.8 MB) ship inside
the package (`retrain_core/models/tiny_arith/`, with `BUILD_INFO.json` recording the recipe,
the library versions and the files' SHA-256), so it loads at once everywhere. The builder
below is how those files were made: `retrain models build tiny-arith --out DIR`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

BUILTIN_NAME = "builtin:tiny-arith"
MODEL_VERSION = "tiny-arith-v3"  # bump when the recipe changes (and re-ship the files)
SHIPPED_DIR = Path(__file__).resolve().parent / "tiny_arith"
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
WEIGHT_FILES = ("model.safetensors", "tokenizer.json", "config.json")


def tiny_model_path() -> Path:
    """Folder of the shipped tiny model (save_pretrained layout)."""
    if not (SHIPPED_DIR / "config.json").exists():
        raise FileNotFoundError(
            f"the built-in tiny model is missing from the package ({SHIPPED_DIR}); reinstall "
            "retrain-tui, or rebuild it with `retrain models build tiny-arith --out "
            f"{SHIPPED_DIR}`")
    return SHIPPED_DIR


def resolve_model_path(name: str) -> str:
    """`builtin:tiny-arith` → the shipped directory; anything else unchanged."""
    if name == BUILTIN_NAME:
        return str(tiny_model_path())
    if name.startswith("builtin:"):  # another registered built-in (e.g. builtin:smollm2-135m)
        from retrain_core.registry import REGISTRY, PluginError

        try:
            return str(REGISTRY.resolve("builtin_model", name.removeprefix("builtin:"))())
        except PluginError as exc:
            raise ValueError(f"[model].model: {exc}") from None
    return name


def file_digests(folder: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of the files that define the model (what BUILD_INFO.json records)."""
    return {name: hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest()
            for name in WEIGHT_FILES}


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


def build_tiny_model(out_dir: str | os.PathLike, steps: int = WARM_STEPS,
                     progress: bool = False) -> Path:
    """Build tokenizer + model and warm-start it; deterministic for a given recipe.

    `progress` draws a bar on stderr (the full recipe takes about a minute on 2 idle cores).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from retrain_core.tasks.arithmetic import all_problems

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
            _warm_start(model, tok, all_problems("train"), steps, progress)
    finally:
        torch.set_num_threads(threads)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    import transformers

    info = {
        "model_version": MODEL_VERSION, "builder": "retrain models build tiny-arith",
        "recipe": {"warm_steps": steps, "batch": WARM_BATCH, "lr": WARM_LR, "seed": WARM_SEED,
                   "threads": BUILD_THREADS, "boxed_fraction": BOXED_TARGET_FRACTION,
                   "planning_fraction": PLANNING_TARGET_FRACTION,
                   "correct_fraction": CORRECT_TARGET_FRACTION},
        "torch": torch.__version__, "transformers": transformers.__version__,
        "build_seconds": round(time.time() - started, 1),
        "sha256": file_digests(out),
    }
    (out / "BUILD_INFO.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def _warm_start(model, tok, problems, steps: int, progress: bool = False) -> None:
    import torch
    from tqdm import tqdm

    rng = random.Random(WARM_SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=WARM_LR, betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * (1 - s / steps))
    model.train()
    for _ in tqdm(range(steps), desc="warm-start", unit="step", disable=not progress,
                  file=sys.stderr, dynamic_ncols=True):
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
