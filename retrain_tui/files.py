"""File reading for the detail views: only the end of a file is ever read."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path


def tail_lines(path: str | Path, lines: int = 40, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `lines` lines of a file, reading at most `max_bytes` from its end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and text:
        text = text[1:]  # the first line is cut by the window
    return text[-lines:]


def tail_records(path: str | Path, count: int = 5, max_bytes: int = 256 * 1024) -> list[dict]:
    out = []
    for line in tail_lines(path, count * 4, max_bytes):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out[-count:]


def flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def config_diff(campaign_dir: Path, run_dir: Path) -> list[tuple[str, str, str]]:
    """(key, base value, run value) for every key where the run's resolved config differs
    from the campaign's base config."""
    from retrain_core.config import config_to_toml, load_campaign

    run = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    campaign = load_campaign(campaign_dir / "campaign.toml")
    base = tomllib.loads(config_to_toml(campaign.base))
    run_flat, base_flat = flatten(run), flatten(base)
    rows = []
    for key in sorted(set(run_flat) | set(base_flat)):
        a, b = base_flat.get(key, "∅"), run_flat.get(key, "∅")
        if a != b:
            rows.append((key, repr(a), repr(b)))
    return rows
