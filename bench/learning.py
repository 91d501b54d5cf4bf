"""Does RL on the built-in tiny model learn? Held-out accuracy before/after training.

    nice -n 10 .venv/bin/python bench/learning.py [--steps 200] [--seeds 42 101 202]
        [--conditions maxrl+gtpo_sepa grpo+none] [--config configs/demo.toml]

Trains each condition × seed from the demo config (overriding max_steps and seed) and
evaluates the full held-out split (disjoint from training) before and after, sampled at
the training temperature and greedy. Prints per-run rows, per-condition means and the lift.
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
from retrain_core.train.data import heldout_examples
from retrain_core.train.evaluate import heldout_accuracy
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

    def evaluate() -> tuple[float, float]:
        sampled = heldout_accuracy(trainer.backend, held, cfg.data.prompt_template, t.temperature,
                                   t.max_tokens, seed=seed)
        greedy = heldout_accuracy(trainer.backend, held, cfg.data.prompt_template, 0.0, t.max_tokens)
        return sampled, greedy

    before = evaluate()
    started = time.time()
    trainer.run()
    elapsed = time.time() - started
    after = evaluate()
    row = {"condition": condition, "seed": seed, "steps": steps, "sampled_before": before[0],
           "sampled_after": after[0], "greedy_before": before[1], "greedy_after": after[1],
           "train_s": elapsed}
    print(f"{condition:18s} seed {seed:4d}  sampled {before[0]:.3f} -> {after[0]:.3f}  "
          f"greedy {before[1]:.3f} -> {after[1]:.3f}  ({elapsed:.0f}s, {elapsed / steps:.2f}s/step)", flush=True)
    return row


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
    print(f"\nmean over seeds (held-out, n={len(heldout_examples(base.data.source))}):")
    for condition in args.conditions:
        rs = [r for r in rows if r["condition"] == condition]
        m = {k: statistics.mean(r[k] for r in rs) for k in ("sampled_before", "sampled_after", "greedy_before", "greedy_after")}
        lift = 100 * (m["sampled_after"] - m["sampled_before"])
        glift = 100 * (m["greedy_after"] - m["greedy_before"])
        print(f"{condition:18s} sampled {m['sampled_before']:.3f} -> {m['sampled_after']:.3f} "
              f"({lift:+.1f} points)  greedy {m['greedy_before']:.3f} -> {m['greedy_after']:.3f} "
              f"({glift:+.1f} points)  target +10 sampled: {'met' if lift >= 10 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
