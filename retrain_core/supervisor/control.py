"""The control channel: one JSON command file per command in `DIR/control/`.

The directory is 0700 and every file 0600, written atomically (hidden temp name, then
rename), so only the campaign's owner can command it and the supervisor never reads half
a command. The supervisor also ignores files it does not own or that others can write.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from retrain_core.atomic import atomic_write_bytes

from .files import CONTROL

COMMANDS = ("kill", "restart", "pause", "unpause", "stop")
RUN_COMMANDS = ("kill", "restart")


def send(campaign_dir: str | os.PathLike, command: str, run: str | None = None) -> Path:
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r} (expected one of {', '.join(COMMANDS)})")
    if command in RUN_COMMANDS and not run:
        raise ValueError(f"{command} needs a run name")
    directory = Path(campaign_dir) / CONTROL
    directory.mkdir(mode=0o700, exist_ok=True)
    name = f"{time.time_ns():020d}_{os.getpid()}_{command}.json"
    # Owner-only: the channel must not accept commands from other users.
    atomic_write_bytes(directory / name, json.dumps(
        {"command": command, "run": run, "sent_at": time.time()}).encode(), mode=0o600)
    return directory / name


def receive(campaign_dir: str | os.PathLike) -> list[tuple[dict | None, str]]:
    """Pending commands in the order they were sent; each file is consumed.

    Returns (command dict or None when rejected, a note explaining a rejection).
    """
    directory = Path(campaign_dir) / CONTROL
    try:
        entries = sorted((e for e in os.scandir(directory)
                          if e.name.endswith(".json") and not e.name.startswith(".")),
                         key=lambda e: e.name)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
                out.append((None, f"ignored {entry.name}: not a private regular file of this user"))
                continue
            with open(entry.path, encoding="utf-8") as f:
                cmd = json.load(f)
        except (OSError, ValueError) as exc:
            out.append((None, f"ignored {entry.name}: {exc}"))
            continue
        finally:
            try:
                os.unlink(entry.path)
            except OSError:
                pass
        if not isinstance(cmd, dict) or cmd.get("command") not in COMMANDS:
            out.append((None, f"ignored {entry.name}: unknown command"))
            continue
        out.append((cmd, ""))
    return out
