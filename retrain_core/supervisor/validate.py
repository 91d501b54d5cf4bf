"""Reading `manifest.json` and `state.json` defensively: every problem becomes a sentence.

A campaign directory is edited by hand, copied half-way, or left by a full disk; `status`,
the TUI and `--resume` must answer with a message naming the file and what is wrong with
it, never a traceback. `read_campaign` returns what could be read plus those messages.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .files import MANIFEST, STATE

RUN_STATUSES = ("pending", "running", "succeeded", "failed", "killed")


class CampaignFileError(Exception):
    """A campaign file is missing or unusable; str() names the file and the problem."""


def _load(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CampaignFileError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignFileError(f"{path}: cannot be read ({exc})") from None
    if not text.strip():
        raise CampaignFileError(f"{path}: empty")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CampaignFileError(f"{path}: not valid JSON ({exc})") from None


def load_manifest(root: str | os.PathLike) -> dict:
    """The manifest, with a usable `runs` list (each a dict with a unique string name)."""
    path = Path(root) / MANIFEST
    data = _load(path)
    if not isinstance(data, dict):
        raise CampaignFileError(f"{path}: expected a JSON object, found {_kind(data)}")
    runs = data.get("runs")
    if not isinstance(runs, list):
        raise CampaignFileError(f"{path}: \"runs\" must be a list of runs, found {_kind(runs)}")
    seen = set()
    for i, run in enumerate(runs):
        where = f"{path}: runs[{i}]"
        if not isinstance(run, dict):
            raise CampaignFileError(f"{where} must be an object, found {_kind(run)}")
        name = run.get("name")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise CampaignFileError(f"{where} has no usable \"name\" (found {name!r})")
        if name in seen:
            raise CampaignFileError(f"{where}: run name {name!r} appears twice")
        seen.add(name)
        run.setdefault("dir", f"runs/{name}")
    return data


def load_state(root: str | os.PathLike) -> dict:
    """The state as written by the supervisor (an object with a `runs` object)."""
    path = Path(root) / STATE
    data = _load(path)
    if not isinstance(data, dict):
        raise CampaignFileError(f"{path}: expected a JSON object, found {_kind(data)}")
    if not isinstance(data.get("runs"), dict):
        raise CampaignFileError(f"{path}: \"runs\" must be an object, found {_kind(data.get('runs'))}")
    for key in ("supervisor", "squeeze"):
        if not isinstance(data.get(key), dict):
            data[key] = {}
    return data


def state_problems(root: str | os.PathLike, manifest: dict, state: dict) -> list[str]:
    """Runs the state does not describe usably (missing, not an object, unknown status)."""
    path = Path(root) / STATE
    out = []
    for entry in manifest.get("runs", []):
        name = entry["name"]
        r = state["runs"].get(name)
        if r is None:
            out.append(f"{path}: run {name!r} is missing")
        elif not isinstance(r, dict):
            out.append(f"{path}: run {name!r} is {_kind(r)}, not an object")
        elif r.get("status") not in RUN_STATUSES:
            out.append(f"{path}: run {name!r} has unknown status {r.get('status')!r} "
                       f"(expected one of {', '.join(RUN_STATUSES)})")
    return out


def read_campaign(root: str | os.PathLike) -> tuple[dict, dict, list[str]]:
    """(manifest or {}, state or {}, problems): never raises for a bad file."""
    problems: list[str] = []
    try:
        manifest = load_manifest(root)
    except CampaignFileError as exc:
        manifest = {}
        problems.append(str(exc))
    try:
        state = load_state(root)
    except CampaignFileError as exc:
        state = {}
        problems.append(str(exc))
    if manifest and state:
        problems += state_problems(root, manifest, state)
    return manifest, state, problems


def finite_or_none(value):
    """A number that can be shown and serialised as JSON: non-finite or huge ints → None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return value if math.isfinite(float(value)) else None
    except OverflowError:  # an int beyond float range
        return None


def json_safe(obj):
    """`obj` with every non-finite float replaced by None, so `json.dumps` is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _kind(value) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
