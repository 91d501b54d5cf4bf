"""Python API of the supervisor used by the TUI and the CLI. Every call returns at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from . import control
from .files import (
    MANIFEST,
    STATE,
    SUPERVISOR_LOG,
    SUPERVISOR_PID,
    read_json,
    same_process,
)


def launch(config_path: str | os.PathLike, logs_dir: str | os.PathLike = "logs",
           grace_seconds: float | None = None) -> Path:
    """Validate, create the campaign directory, start a detached supervisor; return the dir.

    Raises `retrain_core.config.ConfigError` for an invalid file and
    `campdir.LaunchError` when the campaign cannot run here (nothing is started then).
    """
    from retrain_core.config import load_campaign

    from .campdir import create_campaign_dir

    campaign = load_campaign(config_path)
    root = create_campaign_dir(campaign, logs_dir)
    start_supervisor(root, grace_seconds)
    return root


def resume(campaign_dir: str | os.PathLike, grace_seconds: float | None = None,
           retry_failed: bool = False) -> list[str]:
    """Start a new supervisor that adopts the runs still alive and continues the rest.

    Killed runs (and failed ones with `retry_failed`) are queued again and continue from
    their checkpoints; a missing or corrupt state.json is rebuilt first. Returns what was
    repaired or requeued (sentences for the user). Raises `validate.CampaignFileError`
    when manifest.json is unusable.
    """
    from .rebuild import prepare_resume

    root = Path(campaign_dir)
    if not (root / MANIFEST).exists():
        raise FileNotFoundError(f"{root} is not a campaign directory (no {MANIFEST})")
    notes = []
    if not supervisor_alive(root):
        notes = prepare_resume(root, ("killed", "failed") if retry_failed else ("killed",))
    start_supervisor(root, grace_seconds)
    return notes


def start_supervisor(root: Path, grace_seconds: float | None = None) -> None:
    """Spawn the supervisor fully detached: new session, stdin /dev/null, output to its log.

    `sh -c '… &'` makes it a grandchild that init adopts, so a long-lived caller (the TUI)
    never holds a zombie of it; the new session means no terminal hang-up reaches it.
    """
    cmd = [sys.executable, "-m", "retrain_core.supervisor.daemon", str(Path(root).resolve())]
    if grace_seconds is not None:
        cmd += ["--grace-seconds", str(grace_seconds)]
    with open(Path(root) / SUPERVISOR_LOG, "ab") as log:
        subprocess.run(["/bin/sh", "-c", 'exec "$@" &', "sh", *cmd], stdin=subprocess.DEVNULL,
                       stdout=log, stderr=log, start_new_session=True, close_fds=True, check=True)


def wait_started(campaign_dir: str | os.PathLike, timeout: float = 60.0,
                 since: float | None = None) -> bool:
    """Block until the supervisor of `campaign_dir` runs (CLI convenience).

    With `since` (the time the caller started it), a supervisor that started after it and has
    written its heartbeat counts even if it has already exited: with nothing left to run it
    adopts, settles and ends at once, which is a success, not a failed start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The heartbeat must be the new supervisor's (its pid in state.json, written once it
        # has adopted the runs): an old heartbeat left by a dead one proves nothing.
        sup = read_state(campaign_dir).get("supervisor") or {}
        rec = read_json(Path(campaign_dir) / SUPERVISOR_PID)
        if (isinstance(rec, dict) and sup.get("pid") == rec.get("pid") and sup.get("heartbeat")
                and supervisor_alive(campaign_dir)):
            return True
        if (since is not None and sup.get("heartbeat")
                and float(sup.get("start_time") or 0) >= since - 1.0):
            return True
        time.sleep(0.05)
    return supervisor_alive(campaign_dir)


def send(campaign_dir: str | os.PathLike, command: str, run: str | None = None) -> Path:
    """Queue kill|restart|pause|unpause|stop for the campaign's supervisor; the command file.

    Raises OSError when the command cannot be written (a full disk)."""
    return control.send(campaign_dir, command, run)


def read_state(campaign_dir: str | os.PathLike) -> dict:
    data = read_json(Path(campaign_dir) / STATE, {})
    return data if isinstance(data, dict) else {}  # validate.read_campaign says what is wrong


def read_manifest(campaign_dir: str | os.PathLike) -> dict:
    data = read_json(Path(campaign_dir) / MANIFEST, {})
    return data if isinstance(data, dict) else {}


def supervisor_alive(campaign_dir: str | os.PathLike) -> bool:
    rec = read_json(Path(campaign_dir) / SUPERVISOR_PID)
    if not isinstance(rec, dict):
        return False
    return same_process(rec.get("pid"), rec.get("start_time")) is not None


def find_campaigns(logs_dir: str | os.PathLike = "logs") -> list[Path]:
    """Campaign directories under `logs_dir`, newest first (by name: the name is a timestamp)."""
    root = Path(logs_dir)
    if (root / MANIFEST).exists():
        return [root]
    try:
        found = [p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).exists()]
    except OSError:
        return []
    return sorted(found, key=lambda p: (p.name.split("_")[1:3], p.stat().st_mtime), reverse=True)
