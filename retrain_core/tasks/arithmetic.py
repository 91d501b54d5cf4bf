"""The built-in arithmetic task: seeded two-operand problems with a disjoint held-out split.

Shared by the data source `arithmetic` and the tiny model's supervised warm start, so the
model is warm-started on exactly the distribution it is later trained on with RL.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FIRST_MAX = 100  # first operand 0..99
SECOND_MAX = 10  # second operand 0..9: a digit table plus a carry, learnable by a tiny model
HELD_OUT_EVERY = 7  # pairs whose index % 7 == 0 form the held-out split (disjoint from train)


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str


def _pair_index(a: int, b: int, op: str) -> int:
    return (a * SECOND_MAX + b) * 2 + (op == "-")


def is_held_out(a: int, b: int, op: str) -> bool:
    # A multiplicative hash spreads the held-out pairs over the whole operand range.
    return (_pair_index(a, b, op) * 2654435761 % 2**32) % HELD_OUT_EVERY == 0


def all_problems(split: str) -> list[Problem]:
    """Every problem of a split ("train" or "heldout"), in a fixed order."""
    want_held_out = split == "heldout"
    out = []
    for op in ("+", "-"):
        for a in range(FIRST_MAX):
            for b in range(SECOND_MAX):
                if op == "-" and b > a:
                    continue  # keep answers non-negative
                if is_held_out(a, b, op) == want_held_out:
                    value = a + b if op == "+" else a - b
                    out.append(Problem(f"{a}{op}{b}=?", str(value)))
    return out


def sample_problems(split: str, n: int, seed: int) -> list[Problem]:
    """n problems of a split, drawn without replacement (cycled) with a seeded shuffle."""
    pool = all_problems(split)
    rng = random.Random(seed)
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(n)]
