"""Prompt sources (`arithmetic`, `jsonl:PATH`, `math`), prompt rendering and the data cursor.

The stream is a pure function of (examples, seed, cursor): batch k after a resume is the
same batch k the uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from retrain_core.tasks import arithmetic
from retrain_core.tasks.answers import last_boxed


@dataclass(frozen=True)
class Example:
    question: str
    answer: str


class DataError(ValueError):
    pass


def split_source(source: str) -> tuple[str, str]:
    """("jsonl", "PATH") from "jsonl:PATH"; (source, "") for a plain name or a dotted plugin."""
    from retrain_core.registry import REGISTRY

    name, sep, argument = source.partition(":")
    if sep and (REGISTRY.builtin("data_source", name) is not None
                or ("data_source", name) in REGISTRY.entry_points()):
        return name, argument
    return source, ""


def source_path(argument: str, config_dir: str | Path | None) -> Path:
    """A `jsonl:` path: relative paths are relative to the config file's folder."""
    path = Path(argument).expanduser()
    if not path.is_absolute() and config_dir is not None:
        path = Path(config_dir) / path
    return path


def iter_source(source: str, config_dir: str | Path | None = None,
                search_paths: tuple[str | Path, ...] = ()) -> Iterator[Example]:
    """The examples of `source`, lazily: built-ins, `NAME:ARG` sources and dotted plugins.

    A plugin source is `fn()` (or `fn(ARG)` for an entry point written `NAME:ARG`) that
    returns an iterable of `{"prompt", "answer"}` dicts (or objects with `question` and
    `answer`).
    """
    from retrain_core.registry import REGISTRY, PluginError

    name, argument = split_source(source)
    if name == "jsonl":
        if not argument:
            raise DataError('[data].source: "jsonl:" needs a path (jsonl:PATH)')
        yield from jsonl_source(str(source_path(argument, config_dir)))
        return
    dirs = [config_dir, *search_paths] if config_dir is not None else list(search_paths)
    try:
        fn = REGISTRY.resolve("data_source", name, [d for d in dirs if d is not None])
    except PluginError as exc:
        raise DataError(f"[data].source: {exc}") from None
    rows = fn(argument) if argument or REGISTRY.builtin("data_source", name) else fn()
    for index, row in enumerate(rows):
        yield _as_example(row, source, index)


def _as_example(row, source: str, index: int) -> Example:
    if isinstance(row, Example):
        return row
    if isinstance(row, dict) and "prompt" in row and "answer" in row:
        return Example(str(row["prompt"]), str(row["answer"]))
    if hasattr(row, "question") and hasattr(row, "answer"):
        return Example(str(row.question), str(row.answer))
    raise DataError(f'[data].source "{source}": example {index} is a {type(row).__name__}, '
                    'expected a dict with "prompt" and "answer"')


def load_examples(source: str, max_examples: int | None = None, config_dir: str | Path | None = None,
                  search_paths: tuple[str | Path, ...] = ()) -> list[Example]:
    """The first `max_examples` examples of `source` (None or 0: all of them)."""
    out = []
    for example in iter_source(source, config_dir, search_paths):
        out.append(example)
        if max_examples and 0 < max_examples <= len(out):
            break
    if not out:
        raise DataError(f"[data].source: {source!r} yielded no examples")
    return out


def first_example(source: str, config_dir: str | Path | None = None,
                  search_paths: tuple[str | Path, ...] = ()) -> Example:
    """The first example of `source` (DataError when it has none or cannot be read)."""
    for example in iter_source(source, config_dir, search_paths):
        return example
    raise DataError(f"[data].source: {source!r} yielded no examples")


def heldout_examples(source: str) -> list[Example] | None:
    """The held-out split, when the source has one (arithmetic); disjoint from training."""
    if source != "arithmetic":
        return None
    return [Example(p.question, p.answer) for p in arithmetic.all_problems("heldout")]


def arithmetic_source(argument: str = "") -> Iterator[Example]:
    for p in arithmetic.all_problems("train"):
        yield Example(p.question, p.answer)


def jsonl_source(path_text: str) -> Iterator[Example]:
    path = Path(path_text)
    if not path.is_file():
        raise DataError(f"[data].source: jsonl file not found: {path}")
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
            yield Example(str(row["prompt"]), str(row["answer"]))


def math_source(argument: str = "") -> Iterator[Example]:
    yield from _load_math()


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
