"""Escapees come back to the supervisor, and are ended with their run.

The wrapper of each run is a child subreaper, so what a trainer leaves behind is
re-parented to the wrapper and ended there. If the wrapper itself is SIGKILLed, its
children would go to init, and a daemon that dropped the run's marker (RETRAIN_RUN_ID)
and double-forked into its own session could no longer be found. The supervisor is a
child subreaper too (`adopt_escapees`), so they come to it instead; after a run ends,
`sweep` ends every child of the supervisor that is not a live run's wrapper or the
squeeze analysis (SIGTERM, then SIGKILL) and reaps it. Only such children are touched:
they are our own descendants, so nothing foreign is ever signalled.
"""

from __future__ import annotations

import os

import psutil

from .launcher import LocalLauncher
from .wrapper import become_subreaper

SWEEP_GRACE_S = 2.0


def adopt_escapees() -> bool:
    """Make this process a child subreaper (Linux); False where that is not available."""
    return become_subreaper()


def sweep(sup) -> list[int]:
    """End and reap the supervisor's children that no live run or squeeze owns; their pids."""
    if not isinstance(sup.launcher, LocalLauncher):
        return []  # another launcher (Ray) may own helper processes of its own here
    keep = {h.pid for h in sup.handles.values()}
    if sup.squeeze.proc is not None:
        keep.add(sup.squeeze.proc.pid)
    try:
        children = [c for c in psutil.Process().children() if c.pid not in keep]
    except psutil.Error:
        return []
    victims = []
    for child in children:
        try:
            victims += [child, *child.children(recursive=True)]
        except psutil.Error:
            continue
    for proc in victims:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(victims, timeout=SWEEP_GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=SWEEP_GRACE_S)
    for child in children:  # ours to reap: they were re-parented to us
        try:
            os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            pass
    if victims:
        sup.log("ended processes left behind by a run: " + ", ".join(str(p.pid) for p in victims))
    return [p.pid for p in victims]
