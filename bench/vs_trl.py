"""Our trainer vs TRL's GRPOTrainer at equal work (CPU, fp32): the built-in tiny model, or
the real SmolLM2-135M-Instruct with `--config configs/demo-smol.toml` (reasoning-gym task,
its scorer as the reward on both sides; needs the smol extra).

    nice -n 10 .venv/bin/python bench/vs_trl.py [--steps 20] [--threads 1] [--config configs/demo.toml]
    nice -n 10 .venv/bin/python bench/vs_trl.py --config configs/demo-smol.toml --steps 4 --rounds 3

Same model, B, G, max_tokens, LoRA rank/targets, lr, Adam betas, temperature/top_p, thread
count. Ours runs `grpo+none` (A = r − mean, token-mean loss); TRL runs with beta=0,
loss_type="dapo", scale_rewards="none" (the same objective). Each side runs in its own
subprocess so peak RSS is its own. Prints median step time, completion tokens/s, peak RSS,
held-out sampled accuracy after the same number of steps, and the ratios. Needs `trl`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_cfg(args):
    from retrain_core.config import load_config

    cfg = load_config(args.config)
    cfg.algorithm.advantage_mode, cfg.algorithm.transform_mode = "grpo", "none"
    cfg.training.seed, cfg.training.max_steps, cfg.training.save_every = args.seed, args.steps, 0
    cfg.logging.log_generations = False
    return cfg


def heldout(backend, cfg) -> float | None:
    """Held-out sampled accuracy; None for a source without a held-out split (reasoning-gym)."""
    from retrain_core.tasks.data import heldout_examples
    from retrain_core.train.evaluate import heldout_accuracy

    t = cfg.training
    examples = heldout_examples(cfg.data.source)
    if examples is None:
        return None
    return heldout_accuracy(backend, examples, cfg.data.prompt_template,
                            t.temperature, t.max_tokens, seed=cfg.training.seed)


def child_ours(args) -> dict:
    from retrain_core.train.loop import Trainer

    cfg = load_cfg(args)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", "ours", "grpo+none", quiet=True)
        trainer.run()
        metrics = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        acc = heldout(trainer.backend, cfg)
    n = cfg.training.batch_size * cfg.training.group_size
    return {"step_times": [m["step_time_s"] for m in metrics],
            "tokens": [m["mean_completion_tokens"] * n for m in metrics], "heldout_sampled": acc}


def child_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from retrain_core.models.tiny import resolve_model_path
    from retrain_core.tasks.data import heldout_examples, load_examples, render_prompt
    from retrain_core.train.backend import LocalBackend
    from retrain_core.train.rewards import resolve_reward

    cfg = load_cfg(args)
    t, m = cfg.training, cfg.model
    path = resolve_model_path(m.model)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    examples = load_examples(cfg.data.source, cfg.data.max_examples)
    rows = [{"prompt": render_prompt(tok, cfg.data.prompt_template, e.question), "answer": e.answer} for e in examples]

    reward_fn = resolve_reward(cfg.reward.type)  # the same reward as ours (boxed, reasoning_gym)

    def reward(completions, answer, **_):
        return [reward_fn(c, a) for c, a in zip(completions, answer)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.tokens, self._t = [], [], 0.0

        def on_step_begin(self, *a, **k):
            self._t = time.time()

        def on_step_end(self, *a, **k):
            self.times.append(time.time() - self._t)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                self.tokens.append(logs["completions/mean_length"] * t.batch_size * t.group_size)

    n = t.batch_size * t.group_size
    with tempfile.TemporaryDirectory() as tmp:
        gcfg = GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=n, num_generations=t.group_size,
            generation_batch_size=n, gradient_accumulation_steps=1, max_completion_length=t.max_tokens,
            temperature=t.temperature, top_p=t.top_p, top_k=0, learning_rate=t.lr, beta=0.0,
            loss_type="dapo", scale_rewards="none", use_cpu=True, bf16=False,
            gradient_checkpointing=False, num_iterations=1, adam_beta1=0.9, adam_beta2=0.95,
            adam_epsilon=1e-8, weight_decay=t.weight_decay, max_grad_norm=t.grad_clip_norm,
            lr_scheduler_type="constant", warmup_steps=0, max_steps=t.max_steps, logging_steps=1,
            save_strategy="no", report_to="none", seed=t.seed, disable_tqdm=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        lora = LoraConfig(r=m.lora_rank, lora_alpha=m.lora_alpha or 2 * m.lora_rank,
                          lora_dropout=m.lora_dropout, target_modules=list(m.lora_target_modules),
                          task_type="CAUSAL_LM")
        timer = Timer()
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=gcfg, train_dataset=Dataset.from_list(rows),
                              processing_class=tok, peft_config=lora, callbacks=[timer])
        trainer.train()
        acc = None
        if heldout_examples(cfg.data.source) is not None:  # (no second model load otherwise)
            backend = LocalBackend(cfg)
            backend.model = trainer.model
            acc = heldout(backend, cfg)
    return {"step_times": timer.times, "tokens": timer.tokens, "heldout_sampled": acc}


def run_child(which: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--steps", str(args.steps), "--threads", str(args.threads),
           "--config", args.config, "--seed", str(args.seed)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.toml"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", choices=["ours", "trl"])
    args = ap.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        out = child_ours(args) if args.child == "ours" else child_trl(args)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return 0
    # Alternate the two (ours, trl, ours, trl, …) so a change in machine load hits both.
    results: dict[str, dict] = {}
    for _ in range(args.rounds):
        for which in ("ours", "trl"):
            r = run_child(which, args)
            agg = results.setdefault(which, {"step_times": [], "tokens": [], "heldout_sampled": [], "peak_rss_mb": 0.0})
            agg["step_times"] += r["step_times"][1:]  # the first step pays one-off warm-up
            agg["tokens"] += r["tokens"][1:]
            agg["heldout_sampled"].append(r["heldout_sampled"])
            agg["peak_rss_mb"] = max(agg["peak_rss_mb"], r["peak_rss_mb"])
    cfg = load_cfg(args)
    t = cfg.training
    print(f"{cfg.model.model}, B={t.batch_size} G={t.group_size} max_tokens={t.max_tokens} lr={t.lr} "
          f"rank={cfg.model.lora_rank} threads={args.threads} steps={args.steps} rounds={args.rounds} "
          "(first step of each run excluded from medians)")
    summary = {}
    for which, r in results.items():
        med = statistics.median(r["step_times"])
        tps = statistics.median([k / s for k, s in zip(r["tokens"], r["step_times"])] or [0.0])
        summary[which] = (med, tps, r["peak_rss_mb"])
        accs = [a for a in r["heldout_sampled"] if a is not None]
        acc = f"{statistics.mean(accs):.3f}" if accs else "n/a (no held-out split)"
        print(f"{which:5s} median step {med:.3f}s  tokens/s {tps:.0f}  peak RSS {r['peak_rss_mb']:.0f} MB  "
              f"held-out sampled acc after {args.steps} steps {acc}")
    (om, ot, orss), (tm, tt, trss) = summary["ours"], summary["trl"]
    print(f"ratios: step time trl/ours {tm / om:.2f}x (target >= 1.5)  tokens/s ours/trl {ot / max(tt, 1e-9):.2f}x  "
          f"peak RSS ours/trl {orss / trss:.2f} (target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
