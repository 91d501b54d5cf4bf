"""The step loop of `retrain run` (the run files it writes: docs/ARCHITECTURE.md, configs/README.md).

Per step: draw B prompts, sample B×G completions, reward them, compute token advantages
(with the SEPA λ decided before sampling), take one optimisation step on the LoRA weights,
then write metrics, emergence records and, every `save_every` steps, a checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from retrain_core.tasks.data import DataStream, load_examples, render_prompt
from retrain_core.train import EXIT_OK, EXIT_PREEMPTED
from retrain_core.train import checkpoint as ckpt
from retrain_core.train.memory import is_oom, memory_metrics, oom_error
from retrain_core.train.metrics import JsonlWriter, WandbLogger, peak_memory_mb, progress_line
from retrain_core.train.mismatch import METRIC_KEYS as MISMATCH_KEYS
from retrain_core.train.periodic_eval import EVAL_FILE, PeriodicEval
from retrain_core.train.rewards import resolve_reward
from retrain_core.train.schedule import lr_at, resume_note, schedule_state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Deterministic kernels where they exist (CPU ops here all have one); warn, don't fail.
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class StopRequested(BaseException):
    """A stop arrived before the step finished (between sampling and training, or while
    waiting for a throttle slot): the step is abandoned, the last finished one saved.
    A BaseException, so that no `except Exception` on the way swallows it."""


@dataclass
class StopFlag:
    """Set by SIGTERM/SIGINT: the loop checkpoints the last finished step and exits 75.

    The flag is read between sampling and training and after each step. A throttle wait
    may last as long as other runs hold the slots, so the first stop signal that lands
    during one raises `StopRequested` in it at once (see `acquire`)."""

    requested: bool = False
    signum: int | None = None
    previous: dict = field(default_factory=dict)
    waiting: bool = False  # inside `acquire`: the handler raises instead of only setting
    received_at: float | None = None  # time.monotonic() of the first stop signal

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: give up on the clean stop
        first = not self.requested
        self.requested, self.signum = True, signum
        if first:
            self.received_at = time.monotonic()
        if first and self.waiting:  # only once: the cleanup in `acquire` is never cut short
            raise StopRequested

    def since(self) -> str:
        """", 0.42 s after the signal": how long the stop took (the contract: ≤ a step + 2 s)."""
        return "" if self.received_at is None else f", {time.monotonic() - self.received_at:.2f} s after the signal"

    def check(self) -> None:
        if self.requested:
            raise StopRequested

    def acquire(self, throttle) -> None:
        """`throttle.acquire()`, abandoned with `StopRequested` as soon as a stop arrives.

        The signal interrupts the blocking flock/poll of the wait (PEP 475 retries a system
        call only when the handler returns), and the throttle keeps nothing it took."""
        self.check()
        self.waiting = True
        try:
            throttle.acquire()
            self.waiting = False
        except StopRequested:
            self.waiting = False
            throttle.release()  # it may have landed just after the slot was taken
            raise

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def needs_entropy(cfg) -> bool:
    from retrain_core.advantages import canonical_uncertainty_kind

    try:
        return canonical_uncertainty_kind(cfg.algorithm.uncertainty_kind) == "shannon_entropy"
    except (ValueError, KeyError):
        return False  # a plugin kind: it may ask for entropies itself


class Trainer:
    def __init__(self, cfg, run_dir: Path, run_name: str, label: str, config_dir: Path | None = None,
                 backend=None, quiet: bool = False):
        from retrain_core.advantages import PlanningDetector
        from retrain_core.sepa import SepaController
        from retrain_core.train.backend import make_backend

        self.cfg, self.run_dir, self.run_name, self.label = cfg, Path(run_dir), run_name, label
        self.config_dir, self.quiet = config_dir, quiet
        t = cfg.training
        if t.seed == -1:
            t.seed = random.SystemRandom().randrange(2**32)  # recorded in config.toml
        self.seed = t.seed
        seed_everything(self.seed)
        self.reward_fn = resolve_reward(cfg.reward.type, config_dir)
        self.examples = load_examples(cfg.data.source, cfg.data.max_examples, config_dir)
        # [eval]: the held-out set is set aside before the training stream is built
        self.evaluator = PeriodicEval(cfg, self.examples, self.run_dir)
        self.examples = self.evaluator.training_examples
        self.backend = backend or make_backend(cfg, want_entropy=needs_entropy(cfg), run_dir=self.run_dir)
        self.detector = PlanningDetector(self.backend.tokenizer, cfg.planning.grams)
        self.sepa = SepaController.from_config(cfg.sepa)
        self.stream = DataStream(self.examples, self.seed, cfg.data.shuffle)
        self.step = 0
        self.correct_total = 0
        self.completions_total = 0

    # -- state ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "data_cursor": self.stream.cursor, "sepa": self.sepa.state_dict(),
                "correct_total": self.correct_total, "completions_total": self.completions_total,
                "seed": self.seed, "run": self.run_name, "condition": self.label,
                "lr_schedule": schedule_state(self.cfg.training)}

    def restore(self, directory: Path) -> None:
        state = ckpt.read_state(directory)
        self.backend.load(directory)
        self.step = int(state["step"])
        self.stream.cursor = int(state["data_cursor"])
        self.sepa.load_state_dict(state["sepa"])
        self.correct_total = int(state.get("correct_total", 0))
        self.completions_total = int(state.get("completions_total", 0))
        ckpt.set_rng_state(state["rng"])
        note = resume_note(state.get("lr_schedule"), self.cfg.training, self.step)
        if note:
            self.log(note)

    def step_start_state(self) -> dict:
        """What a step changes before it trains: the RNG streams, the data cursor, SEPA."""
        return {"rng": ckpt.rng_state(), "data_cursor": self.stream.cursor,
                "sepa": self.sepa.state_dict()}

    def rewind(self, before: dict) -> None:
        """Undo an abandoned step (weights and optimizer are untouched until training)."""
        ckpt.set_rng_state(before["rng"])
        self.stream.cursor = before["data_cursor"]
        self.sepa.load_state_dict(before["sepa"])

    def save(self, final: bool = False) -> Path:
        where = self.run_dir / "final" if final else self.run_dir / "checkpoints" / f"step_{self.step}"
        return ckpt.save_checkpoint(self.backend, where, self.state())

    def in_phase(self, phase: str, fn, *args, **kwargs):
        """`fn(...)`; out of memory becomes an error naming the phase, the step and the knob."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_oom(exc):
                raise oom_error(phase, self.step, self.cfg, exc) from exc
            raise

    # -- one step ------------------------------------------------------------------------
    def run_step(self, throttle, stop: StopFlag | None = None) -> tuple[dict, list[dict]]:
        """One step; raises `StopRequested` (state as it was before the step is the caller's
        to restore) when a stop arrives before training starts."""
        from retrain_core.advantages import compute_advantages

        cfg, t = self.cfg, self.cfg.training
        stop = stop or StopFlag()
        started = time.time()
        lam = self.sepa.lambda_for_step(self.step)
        batch = self.stream.next_batch(t.batch_size)
        prompts = [render_prompt(self.backend.tokenizer, cfg.data.prompt_template, ex.question) for ex in batch]
        stop.acquire(throttle)
        try:
            wait = throttle.last_wait_s
            rollouts = self.in_phase("sampling", self.backend.sample, prompts, t.group_size)
        except Exception:
            # A stop signal reaches the whole process group: a vLLM server in it may end
            # mid-request. Then the failed sample is the stop, not a crash.
            stop.check()
            raise
        finally:
            throttle.release()
        stop.check()  # between sampling and training: the sample is dropped, nothing trained
        sample_time = time.time() - started - wait
        answers = [ex.answer for ex in batch for _ in range(t.group_size)]
        rewards = torch.tensor([float(self.reward_fn(text, ans)) for text, ans in zip(rollouts.texts, answers)])
        planning = self.detector(rollouts.completion_ids.cpu(), rollouts.mask.cpu())
        out = compute_advantages(
            rewards, rollouts.group_ids.cpu(), rollouts.logprobs.cpu(), rollouts.mask.cpu(), planning,
            advantage_mode=cfg.algorithm.advantage_mode, transform_mode=cfg.algorithm.transform_mode,
            uncertainty_kind=cfg.algorithm.uncertainty_kind,
            entropies=None if rollouts.entropies is None else rollouts.entropies.cpu(),
            gtpo_beta=cfg.gtpo.beta, hicra_alpha=cfg.hicra.alpha, sepa_lambda=lam,
            advantage_params=cfg.algorithm.advantage_params, transform_params=cfg.algorithm.transform_params,
            algorithm_mode=cfg.algorithm.algorithm_mode, plugin_dir=self.config_dir)
        correct = int((rewards > 0.5).sum())
        n = len(rewards)
        num_datums = int((~out.skipped).sum())
        skipped_step = num_datums == 0
        train_started = time.time()
        lr = lr_at(self.step, t)
        train_stats = {"loss": 0.0, "grad_norm": 0.0, "lr": lr}
        if not skipped_step:
            stop.acquire(throttle)
            try:
                wait += throttle.last_wait_s
                train_started = time.time()
                train_stats = self.in_phase("training", self.backend.train_step, rollouts,
                                            out.token_advantages, active_rows=~out.skipped,
                                                      lr=lr)
            finally:
                throttle.release()
        train_time = time.time() - train_started
        self.correct_total += correct
        self.completions_total += n
        stats = out.stats
        exec_var = stats.get("exec_surprisal_var")
        self.sepa.observe(correct / n, exec_var if exec_var is not None and math.isfinite(exec_var) else None)
        lengths = rollouts.mask.sum(dim=1).float()
        step_time = time.time() - started
        metrics = {
            "step": self.step, "run": self.run_name, "condition": self.label, "seed": self.seed,
            "loss": float(train_stats["loss"]), "mean_reward": float(rewards.mean()),
            "correct_rate": correct / n, "running_correct_rate": self.correct_total / self.completions_total,
            "sepa_lambda": lam, "sepa_gate_open": bool(self.sepa.gate_open), "num_datums": num_datums,
            "skipped_groups": int(out.skipped.view(t.batch_size, t.group_size).all(dim=1).sum()),
            "max_token_hit_rate": float(rollouts.hit_max_tokens.float().mean()),
            "mean_completion_tokens": float(lengths.mean()), "step_time_s": step_time,
            "sample_time_s": sample_time, "train_time_s": train_time, "throttle_wait_s": wait,
            "tokens_per_second": float(lengths.sum()) / max(step_time, 1e-9),
            "batch_size": t.batch_size, "group_size": t.group_size, "lr": float(train_stats["lr"]),
            # None when the backend cannot know it (a remote service): written as null.
            "grad_norm": None if train_stats["grad_norm"] is None else float(train_stats["grad_norm"]),
            "ppo_ratio_mean": train_stats.get("ppo_ratio_mean", 1.0),
            "ppo_ratio_max": train_stats.get("ppo_ratio_max", 1.0),
            "ppo_clip_fraction": train_stats.get("ppo_clip_fraction", 0.0),
            **{key: train_stats.get(key) for key in MISMATCH_KEYS},
            "exec_surprisal_mean": stats.get("exec_surprisal_mean"), "exec_surprisal_var": exec_var,
            "plan_surprisal_mean": stats.get("plan_surprisal_mean"),
            "plan_surprisal_var": stats.get("plan_surprisal_var"),
            "planning_token_fraction": stats.get("planning_token_fraction", 0.0),
            "peak_memory_mb": peak_memory_mb(), **memory_metrics(), "time": time.time(), "skipped": skipped_step,
        }
        generations = [
            {"step": self.step, "prompt": p[:200], "completion": c[:500], "reward": float(r), "num_tokens": int(k)}
            for p, c, r, k in zip(rollouts.prompts, rollouts.texts, rewards.tolist(), lengths.tolist())]
        self.step += 1
        return metrics, generations

    # -- the loop ------------------------------------------------------------------------
    def run(self, resume_from: Path | None = None, stop: StopFlag | None = None) -> int:
        from retrain_core.config import config_to_toml
        from retrain_core.throttle import open_throttle

        cfg, t = self.cfg, self.cfg.training
        self.run_dir.mkdir(parents=True, exist_ok=True)
        source = ckpt.latest_checkpoint(resume_from) if resume_from else None
        source = source or ckpt.latest_checkpoint(self.run_dir)
        if source is not None:
            self.restore(source)
            self.log(f"resumed from {source} at step {self.step}")
        ckpt.atomic_write_text(self.run_dir / "config.toml", config_to_toml(cfg))
        for name in ("metrics.jsonl", "emergence/steps.jsonl", "emergence/generations.jsonl", EVAL_FILE):
            ckpt.truncate_jsonl(self.run_dir / name, self.step)  # steps redone after the checkpoint
        metrics_out = JsonlWriter(self.run_dir / "metrics.jsonl")
        steps_out = JsonlWriter(self.run_dir / "emergence" / "steps.jsonl")
        gens_out = JsonlWriter(self.run_dir / "emergence" / "generations.jsonl")
        wandb_log = WandbLogger(cfg, self.run_name, self.label, self.seed, self.run_dir)
        throttle = open_throttle(cfg.backend.throttle_dir, cfg.backend.max_concurrent, self.run_name)
        stop = stop or StopFlag()
        step_times: list[float] = []
        code = EXIT_OK
        try:
            while self.step < t.max_steps:
                before = self.step_start_state()
                try:
                    metrics, generations = self.run_step(throttle, stop)
                except StopRequested:
                    self.rewind(before)  # the checkpoint is that of the last finished step
                    self.save()
                    self.log(f"stopping on signal {stop.signum} before step {self.step} finished: "
                             f"checkpoint at step {self.step}{stop.since()}")
                    code = EXIT_PREEMPTED
                    break
                metrics_out.write(metrics)
                steps_out.write({"step": metrics["step"], "mean_reward": metrics["mean_reward"],
                                 "correct_count": round(metrics["correct_rate"] * len(generations)),
                                 "total_count": len(generations), "condition": self.label})
                if cfg.logging.log_generations:
                    gens_out.write_many(generations)
                wandb_log.log(metrics)
                if self.evaluator.due(self.step, t.max_steps):
                    for row in self.evaluator.run(self, throttle):
                        self.log(f"eval after step {row['step']}: {row['mode']} correct rate "
                                 f"{row['correct_rate']:.3f} on {row['examples']} held-out problems")
                step_times.append(metrics["step_time_s"])
                recent = step_times[-10:]
                self.log(progress_line(metrics, t.max_steps, sum(recent) / len(recent) * (t.max_steps - self.step)))
                if stop.requested and self.step < t.max_steps:
                    self.save()
                    self.log(f"stopping on signal {stop.signum}: checkpoint at step {self.step}{stop.since()}")
                    code = EXIT_PREEMPTED
                    break
                if t.save_every > 0 and self.step % t.save_every == 0 and self.step < t.max_steps:
                    self.save()
            if code == EXIT_OK:
                self.save(final=True)
                self.log(f"done: {self.step} steps, final adapter in {self.run_dir / 'final'}")
        finally:
            for w in (metrics_out, steps_out, gens_out):
                w.close()
            wandb_log.finish(0 if code in (EXIT_OK, EXIT_PREEMPTED) else 1)
        return code

    def log(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)
