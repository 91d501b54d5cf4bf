"""Located configuration problems and the one exception that carries them.

Every problem names the file, the 1-based line, the dotted key and a message saying what
was expected and what was found, so the CLI can print `FILE:LINE: KEY: message` and the
TUI can show each problem inline next to the offending line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

TOML_TYPE_NAMES = {
    bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table",
}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 when the problem has no place in the file (e.g. unreadable file)
    key: str  # dotted key, e.g. "campaign.conditions[2].sepa.steps"; "" for the whole file
    message: str

    def __str__(self) -> str:
        location = f"{self.file}:{self.line}" if self.line else self.file
        return f"{location}: {self.key}: {self.message}" if self.key else f"{location}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


class ConfigError(ValueError):
    """Raised with every problem of a file at once (never only the first)."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: list[Problem] = sorted(problems, key=lambda p: (p.file, p.line, p.key))
        super().__init__(self._render())

    def _render(self) -> str:
        count = len(self.problems)
        head = f"{count} configuration problem{'s' if count != 1 else ''}"
        return "\n".join([head + ":"] + [f"  {p}" for p in self.problems])


def describe(value: Any) -> str:
    """`integer 5`, `string "x"`: the 'found' half of a message, in TOML's vocabulary."""
    kind = TOML_TYPE_NAMES.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, str) else '"' + value + '"'
    if isinstance(value, bool):
        shown = "true" if value else "false"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{kind} {shown}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest candidate, or '' when nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{matches[0]}"?)' if matches else ""
