"""Benchmark: the vectorised advantage pipeline vs a per-token Python-loop implementation.

N = 8 groups × 16 completions, T = 2048, the five default conditions, on CPU. One call =
planning detection from token ids (real byte-level BPE tokenizer, trained here offline)
+ compute_advantages. The loop peer implements the same formulas the way list-based
trainers do: nested Python lists, one token at a time, a regex per completion.

    .venv/bin/python bench/advantages.py            # full size
    .venv/bin/python bench/advantages.py --quick    # small smoke run

Both sides are timed alternately so that load from other processes hits both alike; the
minima are printed too. In a fresh small process glibc hands every freed multi-MB block
back to the OS, so each call's temporaries page-fault (a trainer that has handled large
tensors is past that); the benchmark therefore first calls `warm_allocator()` (one 24 MB
block allocated and freed), unless `--cold-allocator`.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from retrain_core.advantages import PlanningDetector, compile_gram_pattern, compute_advantages
from retrain_core.advantages.planning import decode_token_pieces
from retrain_core.config.schema import DEFAULT_CONDITIONS, DEFAULT_PLANNING_GRAMS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tests.support

from tests.support.allocator import warm_allocator

FILLER = ["so", "we", "have", "x", "plus", "y", "equals", "the", "sum", "of", "both", "terms", "and", "then", "the", "answer", "is", "twelve", "compute", "first", "value", "second", "value", "therefore", "multiply", "divide", "check", "result", "step"]


def sentence(rng: random.Random) -> str:
    if rng.random() < 0.06:
        return rng.choice(DEFAULT_PLANNING_GRAMS).capitalize() + rng.choice([",", ".", ":"])
    words = " ".join(rng.choice(FILLER) for _ in range(rng.randint(4, 12)))
    return words + rng.choice([".", ",", "\n", " = 3.", "?"])


def build_inputs(groups: int, group_size: int, length: int, seed: int = 0):
    rng = random.Random(seed)
    corpus = [" ".join(sentence(rng) for _ in range(30)) for _ in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok)
    n = groups * group_size
    ids = torch.zeros(n, length, dtype=torch.long)
    mask = torch.zeros(n, length, dtype=torch.bool)
    for i in range(n):
        encoded = tokenizer.encode(" ".join(sentence(rng) for _ in range(length // 4)))
        keep = rng.randint(length // 2, length)
        encoded = encoded[:keep]
        ids[i, : len(encoded)] = torch.tensor(encoded)
        mask[i, : len(encoded)] = True
    g = torch.Generator().manual_seed(seed)
    p_correct = torch.rand(groups, generator=g)
    p_correct[0] = 0.0  # one group with no signal: skipped
    rewards = (torch.rand(n, generator=g) < p_correct.repeat_interleave(group_size)).float()
    group_ids = torch.arange(n) // group_size
    logprobs = -torch.distributions.Exponential(1.5).sample((n, length)) * mask
    return tokenizer, ids, mask, rewards, group_ids, logprobs


# ---------------------------------------------------------------- the per-token loop peer

def loop_planning(ids_rows, lengths, piece_of, pattern):
    out = []
    for row, n_tok in zip(ids_rows, lengths):
        spans, text, pos = [], "", 0
        for token_id in row[:n_tok]:
            piece = piece_of[token_id]
            spans.append((pos, pos + len(piece)))
            text += piece
            pos += len(piece)
        matches = [m.span(1) for m in pattern.finditer(text)]
        flags = []
        for start, end in spans:
            hit = False
            for a, b in matches:
                if start < b and end > a:
                    hit = True
                    break
            flags.append(hit)
        out.append(flags)
    return out


def loop_pipeline(rewards, group_ids, lp_rows, lengths, plan_rows, adv_mode, transform, beta, alpha, lam):
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(g, []).append(i)
    episode = [0.0] * len(rewards)
    skipped = [False] * len(rewards)
    for members in groups.values():
        rs = [rewards[i] for i in members]
        if max(rs) - min(rs) <= 1e-6:
            for i in members:
                skipped[i] = True
            continue
        mu = sum(rs) / len(rs)
        for i in members:
            if adv_mode == "grpo":
                episode[i] = rewards[i] - mu
            else:
                episode[i] = 0.0 if mu <= 1e-6 else (rewards[i] - mu) / (mu + 1e-6)
    token_adv, raw_all, pooled_all = [], [], []
    for i, (lps, n_tok, plan) in enumerate(zip(lp_rows, lengths, plan_rows)):
        u = [min(-lps[t], 50.0) for t in range(n_tok)]
        pooled = list(u)
        if transform == "gtpo_sepa" and lam > 0:
            exec_vals = [u[t] for t in range(n_tok) if not plan[t]]
            if exec_vals:
                mu_exec = sum(exec_vals) / len(exec_vals)
                for t in range(n_tok):
                    if not plan[t]:
                        pooled[t] = lam * mu_exec + (1 - lam) * u[t]
        raw_all.append(u)
        pooled_all.append(pooled)
        a = episode[i]
        row = []
        if skipped[i]:
            row = [0.0] * n_tok
        elif transform == "none":
            row = [a] * n_tok
        else:
            mean_u = sum(pooled) / n_tok if n_tok else 0.0
            for t in range(n_tok):
                if beta == 0 or mean_u < 1e-7:
                    w = 1.0
                else:
                    w = max(0.0, 1 + beta * (pooled[t] / (mean_u + 1e-8) - 1))
                value = a * w
                if transform == "gtpo_hicra" and plan[t]:
                    value = value + alpha * abs(value)
                row.append(value)
        token_adv.append(row)
    stats = {}
    for name, rows in (("", raw_all), ("_pooled", pooled_all)):
        for key, want_plan in (("exec", False), ("plan", True)):
            vals = [v for r, p in zip(rows, plan_rows) for v, q in zip(r, p) if bool(q) == want_plan]
            mean = sum(vals) / len(vals) if vals else math.nan  # NaN: no observation
            var = sum((v - mean) ** 2 for v in vals) / len(vals) if vals else math.nan
            stats[f"{key}_surprisal_mean{name}"] = mean
            stats[f"{key}_surprisal_var{name}"] = var
    total = sum(lengths)
    stats["planning_token_fraction"] = sum(sum(p) for p in plan_rows) / total if total else 0.0
    return token_adv, episode, stats


# ---------------------------------------------------------------------------- main

def median_ms(fn, reps):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def interleaved_ms(fast, slow, fast_reps, slow_reps):
    """Median ms of both, measured alternately so that both see the same machine load
    (this box is shared: a burst of load must not land on one side only)."""
    fast_times, slow_times = [], []
    per_round = max(1, fast_reps // slow_reps)
    for _ in range(slow_reps):
        for _ in range(per_round):
            start = time.perf_counter()
            fast()
            fast_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        slow()
        slow_times.append(time.perf_counter() - start)
    return Timing(fast_times), Timing(slow_times)


class Timing:
    """Median (what we report) and minimum (the least-disturbed run) in milliseconds."""

    def __init__(self, seconds: list[float]):
        self.median = statistics.median(seconds) * 1000
        self.min = min(seconds) * 1000

    def __str__(self) -> str:
        return f"{self.median:8.2f} ms (min {self.min:7.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=40, help="vectorised repetitions (median)")
    parser.add_argument("--loop-reps", type=int, default=5, help="loop repetitions (median)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: these ops are memory-bound; 0 = torch default)")
    parser.add_argument("--quick", action="store_true", help="2×4 completions, T=256")
    parser.add_argument("--cold-allocator", action="store_true",
                        help="skip warm_allocator(): glibc's default thresholds (page faults every call)")
    args = parser.parse_args()
    if args.quick:
        args.groups, args.group_size, args.length, args.reps, args.loop_reps = 2, 4, 256, 4, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.cold_allocator:
        warm_allocator()
    tokenizer, ids, mask, rewards, group_ids, logprobs = build_inputs(args.groups, args.group_size, args.length)
    n, length = ids.shape
    print(f"N={n} ({args.groups}×{args.group_size}), T={length}, completion tokens={int(mask.sum())}, "
          f"torch threads={torch.get_num_threads()}, allocator {'cold' if args.cold_allocator else 'warmed'}")

    detector = PlanningDetector(tokenizer, DEFAULT_PLANNING_GRAMS)
    detector(ids, mask)  # warm the per-token-id decode cache, as a trainer's first step does
    # Loop peer inputs: plain lists, converted outside the timing (list-based trainers hold lists).
    lengths = mask.sum(1).tolist()
    ids_rows, lp_rows = ids.tolist(), logprobs.double().tolist()
    rewards_l, groups_l = rewards.tolist(), group_ids.tolist()
    vocab = sorted(set(ids[mask].tolist()))
    piece_of = dict(zip(vocab, decode_token_pieces(tokenizer, vocab)))
    pattern = compile_gram_pattern(DEFAULT_PLANNING_GRAMS)
    beta, alpha, lam = 0.1, 0.2, 0.6

    plan_loop = loop_planning(ids_rows, lengths, piece_of, pattern)
    plan_vec = detector(ids, mask)
    for i in range(n):
        assert plan_vec[i, : lengths[i]].tolist() == plan_loop[i], f"planning differs on row {i}"
    assert not plan_vec[~mask].any()
    print(f"planning tokens: {int(plan_vec.sum())} ({plan_vec.sum().item() / mask.sum().item():.2%})")

    detect, loop_detect = interleaved_ms(
        lambda: detector(ids, mask), lambda: loop_planning(ids_rows, lengths, piece_of, pattern),
        args.reps, args.loop_reps)
    print(f"{'planning detection only':22s} vectorised {detect}  loop {loop_detect}  ratio "
          f"{loop_detect.median / detect.median:5.1f}× (of minima {loop_detect.min / detect.min:5.1f}×)")

    rows = []
    for cond in DEFAULT_CONDITIONS:
        adv_mode, transform = cond["advantage_mode"], cond["transform_mode"]
        kwargs = {"advantage_mode": adv_mode, "transform_mode": transform, "gtpo_beta": beta,
                      "hicra_alpha": alpha, "sepa_lambda": lam}

        def vectorised(kwargs=kwargs):
            planning = detector(ids, mask)
            return compute_advantages(rewards, group_ids, logprobs, mask, planning, **kwargs)

        def looped(adv_mode=adv_mode, transform=transform):
            plan = loop_planning(ids_rows, lengths, piece_of, pattern)
            return loop_pipeline(rewards_l, groups_l, lp_rows, lengths, plan, adv_mode, transform,
                                 beta, alpha, lam)

        out = vectorised()
        token_adv, episode, stats = looped()
        expected = torch.zeros(n, length, dtype=torch.float64)
        for i, row in enumerate(token_adv):
            expected[i, : len(row)] = torch.tensor(row, dtype=torch.float64)
        assert torch.allclose(out.token_advantages.double(), expected, rtol=1e-4, atol=1e-5), cond
        assert torch.allclose(out.episode_advantages.double(), torch.tensor(episode, dtype=torch.float64),
                              rtol=1e-5, atol=1e-6), cond
        for key, value in stats.items():
            assert (math.isnan(out.stats[key]) and math.isnan(value)) or math.isclose(
                out.stats[key], value, rel_tol=1e-4, abs_tol=1e-6), (cond, key)

        transforms_ms = median_ms(
            lambda kw=kwargs: compute_advantages(rewards, group_ids, logprobs, mask, plan_vec, **kw), args.reps)
        vec, loop = interleaved_ms(vectorised, looped, args.reps, args.loop_reps)
        label = f"{adv_mode}+{transform}"
        rows.append((label, vec, loop))
        print(f"{label:22s} vectorised {vec}  loop {loop}  ratio {loop.median / vec.median:5.1f}× "
              f"(of minima {loop.min / vec.min:5.1f}×)  [compute_advantages alone {transforms_ms:.2f} ms]")

    worst = max(r[1].median for r in rows)
    min_ratio = min(r[2].median / r[1].median for r in rows)
    all_ratio = sum(r[2].median for r in rows) / sum(r[1].median for r in rows)
    print(f"worst median call {worst:.2f} ms (target < 50 ms); speed-up: smallest {min_ratio:.1f}×, "
          f"all five conditions together {all_ratio:.1f}× (target ≥ 30×); outputs of both agree")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
