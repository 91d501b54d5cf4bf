"""Evaluation during training (`[eval] every, examples, sampling, keep_best`).

A held-out set, disjoint from the training data and the same for every seed of a
campaign (so conditions are compared on the same problems): the source's own held-out
split when it has one (arithmetic), else `examples` problems set aside from the source by
a fixed shuffle (and then never trained on). Every `every` steps, and after the last step,
the current policy answers each held-out problem once, greedily and/or sampled at the
training temperature, with its own random stream (training's streams are untouched).

Rows go to `runs/<name>/eval.jsonl`, one per mode:
`{"step", "mode": "greedy" | "sampled", "correct_rate", "examples", "eval_time_s", "time"}`
(`step` is the 0-based index of the last trained step, as in metrics.jsonl). With
`keep_best`, the checkpoint with the best greedy correct rate (sampled when greedy is not
evaluated) is kept as `runs/<name>/best/`; its trainer_state.json has
`"best": {"step", "mode", "correct_rate"}`, which `retrain status` shows.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from retrain_core.tasks.data import Example, heldout_examples
from retrain_core.train import checkpoint as ckpt
from retrain_core.train.evaluate import heldout_accuracy
from retrain_core.train.metrics import JsonlWriter

EVAL_FILE = "eval.jsonl"
BEST_DIR = "best"
SPLIT_SEED = "retrain-eval"  # not the run's seed: every seed holds out the same problems
MAX_HELDOUT_FRACTION = 0.2


def split_heldout(source: str, examples: list[Example], count: int) -> tuple[list[Example], list[Example], str]:
    """(training examples, held-out examples, how they were chosen)."""
    own = heldout_examples(source)
    if own:
        random.Random(SPLIT_SEED).shuffle(own)
        return examples, own[:count], f"the source's held-out split ({min(count, len(own))} of {len(own)})"
    take = min(count, int(len(examples) * MAX_HELDOUT_FRACTION))
    if take < 1:
        raise ValueError(f"[eval]: the data source has {len(examples)} examples, too few to set "
                         f"any aside for evaluation (at most {MAX_HELDOUT_FRACTION:.0%} are)")
    order = list(range(len(examples)))
    random.Random(SPLIT_SEED).shuffle(order)
    held = set(order[:take])
    return ([e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)],
            f"{take} examples set aside from the training data" +
            (f" (capped at {MAX_HELDOUT_FRACTION:.0%})" if take < count else ""))


class PeriodicEval:
    def __init__(self, cfg, examples: list[Example], run_dir: Path):
        e = cfg.eval
        self.cfg, self.every, self.run_dir = cfg, e.every, Path(run_dir)
        self.modes = {"greedy": ["greedy"], "sampled": ["sampled"], "both": ["greedy", "sampled"]}[e.sampling]
        self.keep_best = e.keep_best
        self.note = ""
        self.heldout: list[Example] = []
        self.training_examples = examples
        if self.every > 0:
            self.training_examples, self.heldout, self.note = split_heldout(
                cfg.data.source, examples, e.examples)
        self.best = self._read_best()

    @property
    def enabled(self) -> bool:
        return self.every > 0 and bool(self.heldout)

    def _read_best(self) -> float | None:
        try:
            state = json.loads((self.run_dir / BEST_DIR / ckpt.STATE_FILE).read_text())
            return float(state["best"]["correct_rate"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def due(self, steps_done: int, max_steps: int) -> bool:
        return self.enabled and (steps_done % self.every == 0 or steps_done == max_steps)

    def run(self, trainer, throttle) -> list[dict]:
        """Evaluate now (holding a throttle slot), write the rows, keep the best; the rows."""
        t = self.cfg.training
        rows = []
        with throttle:
            for mode in self.modes:
                started = time.time()
                rate = heldout_accuracy(trainer.backend, self.heldout, self.cfg.data.prompt_template,
                                        0.0 if mode == "greedy" else t.temperature, t.max_tokens,
                                        self.cfg.reward.type, seed=trainer.seed + trainer.step)
                rows.append({"step": trainer.step - 1, "mode": mode, "correct_rate": rate,
                             "examples": len(self.heldout), "eval_time_s": time.time() - started,
                             "time": time.time()})
            out = JsonlWriter(self.run_dir / EVAL_FILE)
            try:
                out.write_many(rows)
            finally:
                out.close()
            score = rows[0]["correct_rate"]
            if self.keep_best and (self.best is None or score > self.best):
                self.best = score
                ckpt.save_checkpoint(trainer.backend, self.run_dir / BEST_DIR, {
                    **trainer.state(), "best": {"step": trainer.step - 1, "mode": rows[0]["mode"],
                                                "correct_rate": score}})
        return rows
