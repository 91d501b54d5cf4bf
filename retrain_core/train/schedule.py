"""Learning-rate schedule: `[training] lr_schedule` with `warmup_steps` (constant, linear, cosine).

The LR of a step is a pure function of the step index and the current config, so a resumed
run continues the schedule exactly (the step is in the checkpoint) and nothing has to be
restored from the optimizer. When the config changed between the checkpoint and the
restart (a new `lr`, schedule, warm-up or `max_steps`), the config wins: the optimizer's
saved LR is overwritten at the next step, and `resume_note` says so in the run's log.
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_at(step: int, training) -> float:
    """LR for 0-based `step`: linear warm-up lr·(step+1)/warmup_steps, then constant, or a
    linear / cosine decay that reaches 0 at `max_steps` (never used: the last step is
    max_steps − 1, so every step trains with an LR > 0)."""
    lr, warmup, total = float(training.lr), int(training.warmup_steps), int(training.max_steps)
    schedule = training.lr_schedule
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"[training].lr_schedule: expected one of {', '.join(LR_SCHEDULES)}, "
                         f"found {schedule!r}")
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return lr
    progress = min((step - warmup) / (total - warmup), 1.0)
    if schedule == "linear":
        return lr * (1.0 - progress)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_state(training) -> dict:
    """What trainer_state.json records, so that a restart can tell whether it changed."""
    return {"lr": float(training.lr), "lr_schedule": training.lr_schedule,
            "warmup_steps": int(training.warmup_steps), "max_steps": int(training.max_steps)}


def resume_note(saved: dict | None, training, step: int) -> str | None:
    """A log line when the checkpoint's schedule differs from the config's (None if equal)."""
    if not saved:
        return None
    now = schedule_state(training)
    changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in now.items() if saved.get(key) != value]
    if not changed:
        return None
    return (f"resume: the LR schedule changed since the checkpoint ({', '.join(changed)}); "
            f"the config wins: step {step} trains at lr {lr_at(step, training):.3g}")
