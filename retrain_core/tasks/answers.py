"""Answer scoring: the `boxed` reward and the answer matching it is built on.

A reward function takes `(completion: str, answer: str)` and returns a float; a completion
is counted correct when its reward is above 0.5.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction

RewardFn = Callable[[str, str], float]


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{…}` with balanced braces; None when there is none."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j]
        # Unbalanced (e.g. cut off by max_tokens): try an earlier box.
        start = text.rfind("\\boxed{", 0, start)
    return None


_FRAC = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")


def normalize(answer: str) -> str:
    s = answer.strip()
    while len(s) >= 2 and s.startswith("$") and s.endswith("$"):
        s = s[1:-1].strip()
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.rstrip(".").strip()
    s = re.sub(r"\s+", "", s)
    return s


def as_number(s: str) -> Fraction | None:
    """Integers, decimals and simple fractions (`3/4`, `\\frac{3}{4}`) as exact values."""
    m = _FRAC.match(s)
    if m:
        s = f"{m.group(1)}/{m.group(2)}"
    s = s.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s) else s
    try:
        if re.fullmatch(r"[-+]?\d+(\.\d+)?", s) or re.fullmatch(r"[-+]?\.\d+", s):
            return Fraction(s)
        m = re.fullmatch(r"([-+]?\d+)/([-+]?\d+)", s)
        if m and int(m.group(2)) != 0:
            return Fraction(int(m.group(1)), int(m.group(2)))
    except (ValueError, ZeroDivisionError):
        return None
    return None


def answers_match(predicted: str, reference: str) -> bool:
    p, r = normalize(predicted), normalize(reference)
    if not p or not r:
        return False
    if p == r:
        return True
    pn, rn = as_number(p), as_number(r)
    return pn is not None and rn is not None and pn == rn


def boxed_reward(completion: str, answer: str) -> float:
    boxed = last_boxed(completion)
    if boxed is None or not answer or not answer.strip():
        return 0.0
    return 1.0 if answers_match(boxed, answer) else 0.0
