"""`reasoning_gym:TASK` prompts and the `reasoning_gym` reward: the task's own scorer.

reasoning-gym (PyPI `reasoning-gym`, optional: `pip install -e .[smol]`) generates problems
procedurally: `gsm_symbolic`, `basic_arithmetic`, `chain_sum`, … (about a hundred). A source
is written `reasoning_gym:TASK` or `reasoning_gym:TASK?key=value&key=value`, where the keys
are the task's own settings plus `size` (problems, default 1000) and `seed` (default 0),
e.g. `reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1`.

The scorer needs the whole generated entry (answer and metadata), not only the answer
string, so an example's `answer` is a small JSON reference, `{"reasoning_gym": SPEC, "index":
N, "answer": …}`: the reward regenerates entry N (generation is a pure function of the
spec, the seed and the index) and scores the completion's final answer (the last
`\\boxed{…}`, else `<answer>…</answer>`, else the last number) with the task's
`score_answer`. This reward is for these sources only; `boxed` cannot read such an answer.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator

from retrain_core.tasks.answers import last_boxed
from retrain_core.tasks.data import DataError, Example

DEFAULT_SIZE = 1000
INSTALL_HINT = "pip install reasoning-gym (or: pip install -e .[smol])"


def _value(text: str):
    if "," in text:  # a list setting: operators=+,-
        return [_value(part.strip()) for part in text.split(",") if part.strip()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(spec: str) -> tuple[str, dict]:
    """("basic_arithmetic", {"size": 1000, "seed": 0, "max_digits": 1}) from the source argument."""
    task, _, query = spec.partition("?")
    if not task.strip():
        raise DataError('[data].source: "reasoning_gym:" needs a task name (reasoning_gym:TASK), '
                        "e.g. reasoning_gym:gsm_symbolic")
    settings: dict = {"size": DEFAULT_SIZE, "seed": 0}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise DataError(f'[data].source "reasoning_gym:{spec}": expected key=value settings '
                            f"after '?', found {part!r}")
        settings[key.strip()] = _value(value.strip())
    return task.strip(), settings


@functools.lru_cache(maxsize=16)
def dataset(spec: str):
    """The task's dataset for `spec` (cached: the reward asks for it once per completion)."""
    try:
        import reasoning_gym
    except ImportError:
        raise DataError(f"[data].source = 'reasoning_gym:{spec}' needs the reasoning-gym package: "
                        f"{INSTALL_HINT}") from None
    task, settings = parse_spec(spec)
    try:
        return reasoning_gym.create_dataset(task, **settings)
    except Exception as exc:  # noqa: BLE001 - an unknown task or setting: say which, with its words
        from difflib import get_close_matches

        names = sorted(reasoning_gym.factory.DATASETS)
        close = get_close_matches(task, names, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close and close[0] != task else ""
        raise DataError(f"[data].source = 'reasoning_gym:{spec}': {type(exc).__name__}: {exc}{hint}") from None


def reasoning_gym_source(spec: str = "") -> Iterator[Example]:
    data = dataset(spec)
    for index in range(len(data)):
        entry = data[index]
        ref = json.dumps({"reasoning_gym": spec, "index": index, "answer": str(entry["answer"])})
        yield Example(str(entry["question"]), ref)


LAST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def final_answer(completion: str) -> str | None:
    """The last `\\boxed{…}`, else `<answer>…</answer>`, else the last number written (small
    models rarely keep a format; the scorer still decides whether it is right)."""
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed.strip()
    from reasoning_gym.utils import extract_answer

    found = extract_answer(completion)
    if found is not None:
        return found.strip()
    numbers = LAST_NUMBER.findall(completion)
    return numbers[-1] if numbers else None


def reasoning_gym_reward(completion: str, answer: str) -> float:
    try:
        ref = json.loads(answer)
        spec, index = ref["reasoning_gym"], int(ref["index"])
    except (ValueError, TypeError, KeyError):
        raise ValueError("[reward].type = 'reasoning_gym' scores examples of a "
                         "[data].source = 'reasoning_gym:TASK'; this example's answer is "
                         f"{answer[:60]!r}") from None
    data = dataset(spec)
    return float(data.score_answer(final_answer(completion), data[index]))
