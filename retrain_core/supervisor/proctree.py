"""Killing a run and everything it started, without ever hitting an unrelated process.

A run = its wrapper (leader of the run's process group and a child subreaper) plus every
descendant. Descendants are found two ways, and the union is tracked by (pid, start time):
- the wrapper's `children(recursive=True)`, repeated while killing: orphans re-parent to
  the subreaper wrapper, so a grandchild in its own session is still found;
- the `RETRAIN_RUN_ID=<campaign>/<run>` environment marker every descendant inherits (a
  process whose parent chain is broken, e.g. after the wrapper itself was killed).

Sequence (`KillJob.tick()` is called from the supervisor loop, so it never blocks it):
SIGTERM to the process group and to tracked escapees → grace period (the trainer
checkpoints) → SIGSTOP all survivors so none can fork a replacement → SIGKILL them,
deepest first → wait for the wrapper to record exit.json and exit (SIGKILL it if it
hangs) → done.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

from .files import RUN_ID_ENV

WRAPPER_EXIT_TIMEOUT_S = 5.0


def processes_with_marker(run_id: str) -> list[psutil.Process]:
    """Live processes of this user whose environment carries the run's marker."""
    uid = os.getuid()
    found = []
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.pid == os.getpid() or proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            if proc.environ().get(RUN_ID_ENV) == run_id:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        if proc.is_running():  # psutil checks pid + create time: never a reused pid
            proc.send_signal(sig)
    except psutil.Error:
        pass


class KillJob:
    def __init__(self, wrapper: psutil.Process | None, pgid: int | None, run_id: str,
                 grace_s: float, on_done=None) -> None:
        self.wrapper = wrapper
        self.pgid = pgid
        self.run_id = run_id
        self.grace_s = grace_s
        self.tracked: dict[tuple[int, float], psutil.Process] = {}
        self.phase = "start"
        self.deadline = 0.0
        self.done = False
        self.on_done = on_done

    def _track(self, scan_env: bool = False) -> None:
        procs: list[psutil.Process] = []
        if self.wrapper is not None and _alive(self.wrapper):
            try:
                procs.extend(self.wrapper.children(recursive=True))
            except psutil.Error:
                pass
        if scan_env:
            procs.extend(p for p in processes_with_marker(self.run_id)
                         if self.wrapper is None or p.pid != self.wrapper.pid)
        for proc in procs:
            try:
                self.tracked.setdefault((proc.pid, proc.create_time()), proc)
            except psutil.Error:
                continue

    def survivors(self) -> list[psutil.Process]:
        return [p for p in self.tracked.values() if _alive(p)]

    def tick(self) -> bool:
        """Advance the kill; True once everything of the run is gone."""
        if self.done:
            return True
        now = time.monotonic()
        if self.phase == "start":
            self._track(scan_env=True)
            if self.pgid and self.wrapper is not None and _alive(self.wrapper):
                try:
                    os.killpg(self.pgid, signal.SIGTERM)  # leader verified by pid + start time
                except (ProcessLookupError, PermissionError):
                    pass
            for proc in self.tracked.values():  # escapees in other groups get asked too
                _signal(proc, signal.SIGTERM)
            self.phase, self.deadline = "grace", now + self.grace_s
        if self.phase == "grace":
            self._track()
            if self.survivors() and now < self.deadline:
                return False
            self.phase = "kill"
        if self.phase == "kill":
            for _ in range(5):  # new children may appear between snapshot and stop
                self._track(scan_env=True)
                alive = self.survivors()
                if not alive:
                    break
                for proc in alive:
                    _signal(proc, signal.SIGSTOP)
                for proc in reversed(alive):  # found parents-first, so deepest first here
                    _signal(proc, signal.SIGKILL)
                time.sleep(0.02)
            self.phase, self.deadline = "wrapper", now + WRAPPER_EXIT_TIMEOUT_S
        if self.phase == "wrapper":
            if self.wrapper is not None and _alive(self.wrapper) and now < self.deadline:
                return False
            if self.wrapper is not None and _alive(self.wrapper):
                _signal(self.wrapper, signal.SIGKILL)
            self.done = True
        return True
