"""The run detail's config diff (its log tails come from `retrain_core.tail`)."""

from __future__ import annotations

import tomllib
from pathlib import Path


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
    # The folder's copy of the TOML: its plugins and data were copied into the runs, so
    # only the document is checked (resolve=False), not the files it names.
    campaign = load_campaign(campaign_dir / "campaign.toml", resolve=False)
    base = tomllib.loads(config_to_toml(campaign.base))
    run_flat, base_flat = flatten(run), flatten(base)
    rows = []
    for key in sorted(set(run_flat) | set(base_flat)):
        a, b = base_flat.get(key, "∅"), run_flat.get(key, "∅")
        if a != b:
            rows.append((key, repr(a), repr(b)))
    return rows
