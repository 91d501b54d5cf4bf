"""TOML text -> validated section values -> `Config`, collecting every problem on the way.

Validation never stops at the first problem: each section, key and element is checked and
all problems are raised together in one `ConfigError`.
"""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

import tomli_w

from .errors import ConfigError, Problem, describe, did_you_mean
from .locate import guess_key_at_line, line_of
from .rules import FIELD_TYPES, SECTIONS, check_field
from .schema import SECTION_TYPES, Config

ALIASES = {("logging", "strategic_grams"): ("planning", "grams")}


class Collector:
    """Accumulates problems of one file, locating each key's line."""

    def __init__(self, file: str, locations: dict[str, int] | None = None):
        self.file = file
        self.locations = locations or {}
        self.problems: list[Problem] = []

    def add(self, key: str, message: str, line: int | None = None) -> None:
        where = line_of(self.locations, key) if line is None else line
        self.problems.append(Problem(self.file, where, key, message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def parse_toml(text: str, file: str) -> dict[str, Any]:
    """tomllib parse; a syntax error becomes a located ConfigError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+), column (\d+)", str(exc))
        line = int(match.group(1)) if match else 0
        message = re.sub(r"\s*\((at line \d+, column \d+|at end of document)\)", "", str(exc))
        if match:
            message += f" (column {match.group(2)})"
        elif "end of document" in str(exc):
            # e.g. an unclosed array: point at the last line with content
            lines = text.rstrip().splitlines()
            line = len(lines)
            message += " (at the end of the file)"
        key = guess_key_at_line(text, line) if line else ""
        raise ConfigError([Problem(file, line, key, f"TOML syntax error: {message}")]) from None


def other_sections_with(name: str, exclude: str) -> list[str]:
    return [s for s, keys in FIELD_TYPES.items() if name in keys and s != exclude]


def unknown_key_message(section: str, name: str) -> str:
    hint = did_you_mean(name, FIELD_TYPES[section])
    if not hint:
        elsewhere = other_sections_with(name, section)
        if elsewhere:
            hint = f" (it belongs in [{elsewhere[0]}])"
    return f"unknown key in [{section}]{hint}"


def unknown_section_message(name: str, value: Any, known: list[str]) -> str:
    if name == "campaign":
        return "unknown section [campaign]: a run config has no [campaign]"
    if not isinstance(value, dict):  # a key written before any [section] header
        owners = other_sections_with(name, "")
        where = f"; put it under [{owners[0]}]" if owners else did_you_mean(name, known)
        return f"key outside any section{where}"
    return f"unknown section [{name}]{did_you_mean(name, known)}"


def check_section(out: Collector, section: str, table: Any, key_prefix: str) -> dict[str, Any]:
    """Validated values of one section table (only the keys present, and only valid ones)."""
    if not isinstance(table, dict):
        out.add(key_prefix, f"expected a table [{section}], found {describe(table)}")
        return {}
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{key_prefix}.{name}"
        if name not in FIELD_TYPES[section]:
            out.add(key, unknown_key_message(section, name))
            continue
        if section == "campaign" and name == "conditions":
            values[name] = value  # validated condition by condition in campaign.py
            continue
        normalised, problems = check_field(section, name, value)
        for suffix, message in problems:
            out.add(key + suffix, message)
        if not problems:
            values[name] = normalised
    return values


def check_document(out: Collector, doc: dict[str, Any], allow_campaign: bool = True
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Per-section validated values of a parsed document, and its raw [campaign] table."""
    sections: dict[str, dict[str, Any]] = {}
    campaign: dict[str, Any] | None = None
    known = list(SECTIONS) if allow_campaign else list(SECTION_TYPES)
    for name, table in doc.items():
        if name not in known:
            out.add(name, unknown_section_message(name, table, known))
            continue
        if name == "logging" and isinstance(table, dict) and "strategic_grams" in table:
            table = dict(table)
            grams = table.pop("strategic_grams")
            planning = doc.get("planning")
            if isinstance(planning, dict) and "grams" in planning:
                out.add("logging.strategic_grams",
                        "is an alias of [planning].grams, which is also set: keep one")
            else:
                _, problems = check_field("planning", "grams", grams)
                for suffix, message in problems:
                    out.add("logging.strategic_grams" + suffix, message)
                if not problems:
                    sections.setdefault("planning", {})["grams"] = list(grams)
        values = check_section(out, name, table, name)
        if name == "campaign":
            campaign = values if isinstance(table, dict) else {}
        else:
            sections.setdefault(name, {}).update(values)
    return sections, campaign


def build_config(sections: dict[str, dict[str, Any]]) -> Config:
    """A Config from validated per-section values; missing keys take the schema defaults."""
    built = {name: cls(**copy.deepcopy(sections.get(name, {}))) for name, cls in SECTION_TYPES.items()}
    return Config(**built)


def config_from_dict(data: dict[str, Any], file: str = "<dict>") -> Config:
    """Validate a nested dict (e.g. a parsed `config.toml`) into a Config, or raise ConfigError."""
    out = Collector(file)
    if not isinstance(data, dict):
        out.add("", f"expected a table of sections, found {describe(data)}")
        out.raise_if_any()
    sections, _ = check_document(out, data, allow_campaign=False)
    out.raise_if_any()
    return build_config(sections)


def config_to_toml(cfg: Config) -> str:
    """Every key of the resolved config as TOML; `load_config` reads it back unchanged."""
    header = "# Full resolved config of this run (every key, written by retrain).\n\n"
    return header + tomli_w.dumps(cfg.to_dict())
