"""TOML values as the editor writes them: plain values from tomlkit items, inline tables in
the `{ key = value }` style, and a condition's overrides as an inline-table body."""

from __future__ import annotations

from typing import Any

import tomlkit


def to_plain(value: Any) -> Any:
    """tomlkit items → plain Python values."""
    if hasattr(value, "unwrap"):
        return value.unwrap()
    return value


def inline_table(cond: dict):
    """An inline table in the `{ key = value }` style of the demo configs."""
    table = tomlkit.inline_table()
    table.update(cond)
    body = table.as_string().strip()[1:-1].strip()
    return tomlkit.parse(f"x = {{ {body} }}")["x"]


def format_overrides(cond: dict) -> str:
    """The condition's override keys as an inline-table body: `sepa.steps = 100, lr = 1e-5`."""
    rest = {k: v for k, v in cond.items() if k not in ("advantage_mode", "transform_mode")}
    if not rest:
        return ""
    doc = tomlkit.inline_table()
    doc.update(rest)
    return doc.as_string().strip()[1:-1].strip()


def parse_overrides(text: str) -> dict:
    """Inverse of `format_overrides`; raises ValueError with tomlkit's message."""
    text = text.strip()
    if not text:
        return {}
    try:
        return to_plain(tomlkit.parse(f"x = {{ {text} }}")["x"])
    except Exception as exc:  # noqa: BLE001 - tomlkit raises several exception types
        raise ValueError(f"overrides: {exc}") from None
