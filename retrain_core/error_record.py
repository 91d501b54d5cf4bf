"""What ended a run, as data: the trainer's `error.json` and the kernel's OOM count.

The last stderr line of a dead trainer is usually a warning fragment (`return
forward_call(*args, **kwargs)`), which says nothing and makes unrelated failures look
alike to the circuit breaker. The trainer records the exception itself instead; the
supervisor reads it (`read_error`) and compares `key(...)`. A SIGKILL leaves no record:
the wrapper compares the cgroup's OOM-kill counter before and after (`oom_kills`) to
say whether the kernel's OOM killer did it.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

from retrain_core.atomic import atomic_write_json

ERROR_JSON = "error.json"
TRACEBACK_LINES = 20


def write_error(run_dir: str | os.PathLike, exc: BaseException) -> None:
    """Record `exc` in RUN_DIR/error.json; never raises (the run is failing already)."""
    lines = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    record = {"type": type(exc).__name__, "message": str(exc).strip()[:2000],
              "traceback": lines[-TRACEBACK_LINES:], "time": time.time(), "pid": os.getpid()}
    try:
        atomic_write_json(Path(run_dir) / ERROR_JSON, record)
    except OSError:
        pass  # a full disk: stderr still has the traceback


def read_error(run_dir: str | os.PathLike) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / ERROR_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return None
    return data


def key(record: dict) -> str:
    """One line naming the error: `ValueError: reward exploded` (what the breaker compares)."""
    message = str(record.get("message") or "").strip().splitlines()
    return f"{record['type']}: {message[0]}" if message else record["type"]


def _cgroup_files() -> list[Path]:
    """memory.events (cgroup v2) or memory.oom_control (v1) of this process's cgroup."""
    out = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if controllers == "":
            out += [Path("/sys/fs/cgroup") / path / "memory.events"]
        elif "memory" in controllers.split(","):
            # inside a cgroup namespace the path shown may not exist under the mount
            out += [Path("/sys/fs/cgroup/memory") / path / "memory.oom_control",
                    Path("/sys/fs/cgroup/memory/memory.oom_control")]
    return out


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this cgroup (None: unknown)."""
    for path in _cgroup_files():
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None
