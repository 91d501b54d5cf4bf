"""Prompt sources (`arithmetic`, `jsonl:PATH`, `math`), prompt rendering and the data cursor.

The stream is a pure function of (examples, seed, cursor): batch k after a resume is the
same batch k the uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from retrain_core.train import arithmetic
from retrain_core.train.rewards import last_boxed


@dataclass(frozen=True)
class Example:
    question: str
    answer: str


class DataError(ValueError):
    pass


def load_examples(source: str, max_examples: int = 0, config_dir: str | Path | None = None) -> list[Example]:
    if source == "arithmetic":
        out = [Example(p.question, p.answer) for p in arithmetic.all_problems("train")]
    elif source.startswith("jsonl:"):
        out = _load_jsonl(source[len("jsonl:"):], config_dir)
    elif source == "math":
        out = _load_math()
    else:
        raise DataError(f"[data].source: unknown source {source!r} (expected 'math', 'arithmetic' or 'jsonl:PATH')")
    if max_examples > 0:
        out = out[:max_examples]
    if not out:
        raise DataError(f"[data].source: {source!r} yielded no examples")
    return out


def heldout_examples(source: str) -> list[Example] | None:
    """The held-out split, when the source has one (arithmetic); disjoint from training."""
    if source != "arithmetic":
        return None
    return [Example(p.question, p.answer) for p in arithmetic.all_problems("heldout")]


def _load_jsonl(path_text: str, config_dir: str | Path | None) -> list[Example]:
    path = Path(path_text).expanduser()
    if not path.is_absolute() and config_dir is not None and not path.exists():
        path = Path(config_dir) / path
    if not path.exists():
        raise DataError(f"[data].source: jsonl file not found: {path}")
    out = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from exc
            if not isinstance(row, dict) or "prompt" not in row or "answer" not in row:
                raise DataError(f"{path}:{lineno}: each line needs string fields 'prompt' and 'answer'")
            out.append(Example(str(row["prompt"]), str(row["answer"])))
    return out


# Mirrors of the Hendrycks MATH train split (the original dataset id was withdrawn).
MATH_DATASETS = [("DigitalLearningGmbH/MATH-lighteval", "default"), ("EleutherAI/hendrycks_math", None)]
MATH_SUBJECTS = ["algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus"]


def _load_math() -> list[Example]:
    try:
        import datasets  # optional: only this source needs it
    except ImportError as exc:
        raise DataError("[data].source = 'math' needs the `datasets` package (pip install datasets), "
                        "or use source = 'arithmetic' / 'jsonl:PATH'") from exc
    errors = []
    for name, config in MATH_DATASETS:
        try:
            if config is None:
                parts = [datasets.load_dataset(name, s, split="train") for s in MATH_SUBJECTS]
                rows = [r for part in parts for r in part]
            else:
                rows = list(datasets.load_dataset(name, config, split="train"))
        except Exception as exc:  # noqa: BLE001 - unreachable hub, not cached, renamed …
            errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        out = [Example(r["problem"], last_boxed(r["solution"]) or "") for r in rows]
        return [e for e in out if e.answer]
    raise DataError("[data].source = 'math': the Hendrycks MATH train split is neither cached nor "
                    "reachable (" + "; ".join(errors) + "). Use source = 'arithmetic' or 'jsonl:PATH' offline.")


def render_prompt(tokenizer, template: str, question: str) -> str:
    """The prompt text: the template with {question}, wrapped in the chat template if any."""
    try:
        text = template.format(question=question)
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"[data].prompt_template: cannot fill template ({exc}); it needs a "
                        "{question} placeholder and literal braces doubled ({{}})") from exc
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    return (bos or "") + text


class DataStream:
    """Seeded epoch-wise shuffle over the examples; `cursor` counts examples drawn so far."""

    def __init__(self, examples: list[Example], seed: int, shuffle: bool = True, cursor: int = 0):
        self.examples = examples
        self.seed = seed
        self.shuffle = shuffle
        self.cursor = cursor
        self._epoch, self._order = -1, list(range(len(examples)))

    def _order_for(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            order = list(range(len(self.examples)))
            if self.shuffle:
                random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._epoch, self._order = epoch, order
        return self._order

    def next_batch(self, n: int) -> list[Example]:
        out = []
        for _ in range(n):
            epoch, pos = divmod(self.cursor, len(self.examples))
            out.append(self.examples[self._order_for(epoch)[pos]])
            self.cursor += 1
        return out
