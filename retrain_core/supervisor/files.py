"""Campaign-directory file names, atomic JSON I/O and process identity helpers."""

from __future__ import annotations

import json
import os
import time

import psutil

from retrain_core.atomic import atomic_write_json  # noqa: F401  (the supervisor imports it from here)

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
