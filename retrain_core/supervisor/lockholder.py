"""Who holds a lock file: the process named by the kernel, not by a pid file.

When `supervisor.lock` is busy, `supervisor.pid` may name a supervisor that died long ago
while something else (another user's process, a stray copy) holds the lock. The kernel's
`/proc/locks` lists the pid of every flock holder by inode; that is the one to name.
"""

from __future__ import annotations

import os
import time

import psutil


def lock_holder_pids(path: str | os.PathLike) -> list[int]:
    """Pids holding an flock/POSIX lock on `path` (Linux /proc/locks; [] elsewhere)."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        try:
            pid, where = int(fields[4]), fields[5]
            major, minor, inode = where.split(":")
        except (IndexError, ValueError):
            continue
        if int(inode) == st.st_ino and os.makedev(int(major, 16), int(minor, 16)) == st.st_dev:
            pids.append(pid)
    return sorted(set(pids))


def describe_holder(path: str | os.PathLike) -> str:
    """"pid 123 (user ana, started 14:02:11: python -m retrain_core.supervisor.daemon …)"."""
    described = []
    for pid in lock_holder_pids(path):
        try:
            proc = psutil.Process(pid)
            cmd = " ".join(proc.cmdline()).replace("\n", "; ")[:160] or proc.name()
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(proc.create_time()))
            described.append(f"pid {pid} (user {proc.username()}, started {started}: {cmd})")
        except psutil.Error:
            described.append(f"pid {pid}")
    return ", ".join(described) or "a process this system does not name"
