"""Does RL on the built-in tiny model learn? Held-out accuracy before/after training.

    nice -n 10 .venv/bin/python bench/learning.py [--steps 200] [--seeds 42 101 202]
        [--conditions maxrl+gtpo_sepa grpo+none] [--config configs/demo.toml]

Trains each condition × seed from the demo config (overriding max_steps and seed) and
evaluates the full held-out split (disjoint from training) before and after, sampled at
the training temperature and greedy. Prints per-run rows with the paired 95% interval of
the change (held-out noise for that seed), then per condition the mean change over seeds
with its 95% Student-t interval (seed-to-seed spread; needs ≥ 3 seeds to mean much).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from retrain_core.config import load_config
from retrain_core.tasks.data import heldout_examples
from retrain_core.train.evaluate import heldout_correct, mean_interval, paired_difference
from retrain_core.train.loop import Trainer


def run_one(base, condition: str, seed: int, steps: int, out_root: Path) -> dict:
    cfg = copy.deepcopy(base)
    adv, transform = condition.split("+")
    cfg.algorithm.advantage_mode, cfg.algorithm.transform_mode = adv, transform
    cfg.training.seed, cfg.training.max_steps = seed, steps
    cfg.training.save_every = 0
    cfg.logging.log_generations = False
    name = f"{condition}_s{seed}"
    trainer = Trainer(cfg, out_root / name, name, condition, quiet=True)
    held = heldout_examples(cfg.data.source)
    t = cfg.training

    def evaluate() -> tuple[list[bool], list[bool]]:
        sampled = heldout_correct(trainer.backend, held, cfg.data.prompt_template, t.temperature,
                                  t.max_tokens, seed=seed)
        greedy = heldout_correct(trainer.backend, held, cfg.data.prompt_template, 0.0, t.max_tokens)
        return sampled, greedy

    before = evaluate()
    started = time.time()
    trainer.run()
    elapsed = time.time() - started
    after = evaluate()
    acc = [sum(x) / len(x) for x in (*before, *after)]
    sampled, greedy = paired_difference(before[0], after[0]), paired_difference(before[1], after[1])
    row = {"condition": condition, "seed": seed, "steps": steps, "sampled_before": acc[0],
           "sampled_after": acc[2], "greedy_before": acc[1], "greedy_after": acc[3],
           "sampled_change": sampled[0], "greedy_change": greedy[0], "train_s": elapsed}
    print(f"{condition:18s} seed {seed:4d}  sampled {acc[0]:.3f} -> {acc[2]:.3f} {points(sampled)}  "
          f"greedy {acc[1]:.3f} -> {acc[3]:.3f} {points(greedy)}  "
          f"({elapsed:.0f}s, {elapsed / steps:.2f}s/step)", flush=True)
    return row


def points(interval: tuple[float, float, float]) -> str:
    change, low, high = (100 * x for x in interval)
    return f"{change:+5.1f} [{low:+5.1f}, {high:+5.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.toml")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 101, 202])
    ap.add_argument("--conditions", nargs="+", default=["maxrl+gtpo_sepa", "grpo+none"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = load_config(args.config)
    t = base.training
    print(f"config {args.config}: B={t.batch_size} G={t.group_size} max_tokens={t.max_tokens} "
          f"T={t.temperature} lr={t.lr} rank={base.model.lora_rank} steps={args.steps} seeds={args.seeds}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="retrain-learning-") as tmp:
        for condition in args.conditions:
            for seed in args.seeds:
                rows.append(run_one(base, condition, seed, args.steps, Path(tmp)))
    print(f"\nchange in points over {len(args.seeds)} seeds, mean [95% t-interval] "
          f"(held-out n={len(heldout_examples(base.data.source))}):")
    for condition in args.conditions:
        rs = [r for r in rows if r["condition"] == condition]
        m = {k: statistics.mean(r[k] for r in rs) for k in ("sampled_before", "sampled_after", "greedy_before", "greedy_after")}
        sampled = mean_interval([r["sampled_change"] for r in rs])
        greedy = mean_interval([r["greedy_change"] for r in rs])
        verdict = "learns" if sampled[1] > 0 else "not distinguishable from 0"
        print(f"{condition:18s} sampled {m['sampled_before']:.3f} -> {m['sampled_after']:.3f} {points(sampled)}  "
              f"greedy {m['greedy_before']:.3f} -> {m['greedy_after']:.3f} {points(greedy)}  sampled: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
