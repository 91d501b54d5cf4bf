"""Non-finite training: a NaN/inf update is skipped, a run of them ends the run.

One NaN in the loss or the gradient norm, applied by AdamW, turns the adapter into NaN for
good (and every later step with it). `NonFiniteGuard.allow_update` is asked before each
optimizer step: a non-finite one is skipped (the step's loss and grad_norm are logged as
null and a line goes to stderr), and `MAX_IN_A_ROW` skipped in a row fail the run with an
error that says so. A reward function returning NaN is an error naming it (`finite_reward`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

MAX_IN_A_ROW = 3


class NonFiniteTraining(RuntimeError):
    """Training diverged: the loss or gradient norm stayed non-finite."""


class NonFiniteGuard:
    def __init__(self, limit: int = MAX_IN_A_ROW) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.skipped_total = 0

    def allow_update(self, loss: float, grad_norm: float) -> bool:
        """True: apply the update. False: skip it. Raises after `limit` skips in a row."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.skipped_total += 1
        if self.in_a_row >= self.limit:
            raise NonFiniteTraining(
                f"training diverged: the loss or gradient norm was not finite in {self.in_a_row} "
                f"steps in a row (loss {loss}, grad norm {grad_norm}); the adapter was left as it "
                f"was before them. Lower [training].lr, set [training].grad_clip_norm, or check "
                f"the reward and advantage plugins")
        print(f"retrain: non-finite update skipped (loss {loss}, grad norm {grad_norm}; "
              f"{self.in_a_row} in a row, {self.limit} fail the run)", file=sys.stderr, flush=True)
        return False


def finite_reward(fn: Callable[[str, str], float], name: str) -> Callable[[str, str], float]:
    """`fn`, checked: a reward that is not a finite number is an error naming `name`."""

    def checked(completion: str, answer: str) -> float:
        value = fn(completion, answer)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"[reward].type = {name!r} returned {value!r}, not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"[reward].type = {name!r} returned {number} for a completion "
                             f"(answer {answer!r}); rewards must be finite numbers")
        return number

    checked.__wrapped__ = fn  # type: ignore[attr-defined]
    return checked
