"""Rollout throughput: the trainer's own sampling loop (engine = "hf", `decode.sample_rows`)
vs a vLLM server (engine = "vllm").

    nice -n 10 .venv/bin/python bench/rollout.py [--model builtin:tiny-arith] [--sizes 1,4,16,64,256]
                                                 [--rounds 5] [--max-tokens 40] [--threads 2]

Same model, same LoRA weights (one backend object: `VllmBackend` is the local backend with
vLLM sampling, so the HF side calls `LocalBackend.sample` on it), same prompts,
temperature 1.0 / top_p 1.0, same max_tokens. For each batch size N (completions per
call: N/8 prompts × G = 8, or 1 × N below 8) it prints completions/s and completion
tokens/s, median of `--rounds` timed calls after one warm-up call each, and the smallest N
at which vLLM is faster (the crossover). The vLLM engine's start-up (server process to
healthy) is reported on its own line: it is paid once per run. Last, the agreement of
vLLM's sampled-token log-probs with the HF training pass (`--dtype` sets both sides).
Needs `make vllm`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTIONS = ["12+7=", "3+45=", "60-18=", "9+9=", "71-5=", "4+88=", "33-21=", "15+27="]


def make_backend(args):
    from retrain_core.config.schema import Config
    from retrain_core.train.vllm_sampling import VllmBackend

    cfg = Config()
    cfg.model.model, cfg.model.lora_rank, cfg.backend.devices = args.model, 8, "cpu"
    cfg.model.dtype = args.dtype
    cfg.inference.engine = "vllm"
    cfg.inference.vllm_command = args.vllm_command
    t = cfg.training
    t.seed, t.max_tokens, t.temperature, t.top_p = 0, args.max_tokens, 1.0, 1.0
    started = time.monotonic()
    backend = VllmBackend(cfg, run_dir=Path(tempfile.mkdtemp(prefix="bench-rollout-")))
    return backend, time.monotonic() - started


def timed(sample, prompts, group) -> tuple[float, int]:
    started = time.perf_counter()
    rollouts = sample(prompts, group)
    return time.perf_counter() - started, int(rollouts.mask.sum())


def agreement(backend) -> None:
    """vLLM's sampled-token log-probs vs the HF training pass on the same tokens."""
    import torch

    torch.manual_seed(0)
    rollouts = backend.sample(QUESTIONS[:4], 8)
    with torch.no_grad():
        lp, _ = backend.forward_logprobs(rollouts, torch.arange(32))
    gap = (lp.float() - rollouts.logprobs)[rollouts.mask].abs()
    print(f"agreement (32 completions, {int(rollouts.mask.sum())} tokens): mean |Δ log p| "
          f"{float(gap.mean()):.2e}, max {float(gap.max()):.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny-arith")
    parser.add_argument("--sizes", default="1,4,16,64,256", help="completions per call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the HF side")
    parser.add_argument("--vllm-command", default=".venv-vllm/bin/vllm")
    parser.add_argument("--dtype", default="float32", help="both sides: float32 or bfloat16")
    args = parser.parse_args()

    import torch

    from retrain_core.train.backend import LocalBackend

    torch.set_num_threads(args.threads)
    backend, start_s = make_backend(args)
    print(f"model {args.model} ({args.dtype}), max_tokens {args.max_tokens}, temperature 1.0, top_p 1.0, "
          f"HF threads {args.threads}, rounds {args.rounds} (median)")
    print(f"vLLM engine start-up: {backend.server.started_s:.1f} s from launch to healthy "
          f"({start_s:.1f} s with the trainer's own model load)")
    engines = {"hf": lambda p, g: LocalBackend.sample(backend, p, g), "vllm": backend.sample}
    print(f"{'N':>5} {'engine':>6} {'s/call':>8} {'compl/s':>9} {'tok/s':>9}")
    crossover = None
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            group = min(8, n)
            prompts = [QUESTIONS[i % len(QUESTIONS)] for i in range(max(n // group, 1))]
            speed = {}
            for name, sample in engines.items():
                torch.manual_seed(0)
                timed(sample, prompts, group)  # warm-up (and, for vLLM, the adapter push)
                runs = [timed(sample, prompts, group) for _ in range(args.rounds)]
                seconds = statistics.median(s for s, _ in runs)
                tokens = statistics.median(k for _, k in runs)
                speed[name] = n / seconds
                print(f"{n:>5} {name:>6} {seconds:>8.3f} {n / seconds:>9.1f} {tokens / seconds:>9.0f}",
                      flush=True)
            if crossover is None and speed["vllm"] > speed["hf"]:
                crossover = n
        agreement(backend)
    finally:
        backend.close()
    print(f"crossover: vLLM faster from N = {crossover} completions per call" if crossover
          else "crossover: vLLM not faster at any N measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
