"""Campaign-directory file names, atomic JSON I/O and process identity helpers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil

STATE = "state.json"
MANIFEST = "manifest.json"
CAMPAIGN_TOML = "campaign.toml"
SUPERVISOR_LOCK = "supervisor.lock"
SUPERVISOR_PID = "supervisor.pid"
SUPERVISOR_LOG = "supervisor.log"
CONTROL = "control"
THROTTLE = "throttle"
SQUEEZE = "squeeze"
RUNS = "runs"
EXIT_JSON = "exit.json"
WRAPPER_JSON = "wrapper.json"
RUN_ID_ENV = "RETRAIN_RUN_ID"  # inherited by every descendant of a run: finds escapees

TERMINAL = ("succeeded", "failed", "killed")


def atomic_write_json(path: str | os.PathLike, data, mode: int = 0o644) -> None:
    """Write JSON so readers see the old or the new file, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, json.dumps(data, indent=1, sort_keys=False).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_json(path: str | os.PathLike, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return None


def same_process(pid: int | None, start_time: float | None) -> psutil.Process | None:
    """The live process `pid` if it is still the one that started at `start_time`.

    A pid can be reused by an unrelated process after ours died; comparing the start time
    is what makes signalling a recorded pid safe. Zombies count as dead.
    """
    if not pid or start_time is None:
        return None
    try:
        proc = psutil.Process(int(pid))
        if abs(proc.create_time() - float(start_time)) > 0.01:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.Error, ValueError):
        return None


def now() -> float:
    return time.time()
