"""Free disk space: the supervisor stops launching runs on a (nearly) full disk.

A run started on a full disk dies writing its first checkpoint or metrics line, and every
failed start would cost a retry. Before launching, the supervisor checks the free space
of the campaign's file system against `[campaign] min_free_gb` (manifest `min_free_gb`,
default 1 GB); below it, launching is paused with the reason ("disk full: 12 MB free on
/data, need 1 GB"), which `status` and the TUI show. The pause lifts by itself once the
space is back (a pause the user made stays).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEFAULT_MIN_FREE_GB = 1.0
DISK_FULL = "disk full"


def mount_point(path: str | os.PathLike) -> Path:
    path = Path(path).resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def min_free_gb(manifest: dict) -> float:
    value = manifest.get("min_free_gb", DEFAULT_MIN_FREE_GB)
    return float(value) if isinstance(value, (int, float)) and value >= 0 else DEFAULT_MIN_FREE_GB


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def low_space(root: str | os.PathLike, needed_gb: float) -> str:
    """"" when `root`'s file system has `needed_gb` free, else the reason, naming it."""
    try:
        free = shutil.disk_usage(root).free
    except OSError as exc:
        return f"{DISK_FULL}: cannot check free space on {root}: {exc}"
    if free >= needed_gb * 2**30:
        return ""
    return (f"{DISK_FULL}: {_size(free)} free on {mount_point(root)}, need {_size(needed_gb * 2**30)}"
            f" ([campaign] min_free_gb); launching resumes once there is room")


def may_launch(sup) -> bool:
    """Pause launching (with the reason) while the disk is short; lift a disk pause after."""
    reason = low_space(sup.root, min_free_gb(sup.manifest))
    s = sup.state["supervisor"]
    disk_pause = s.get("paused") and str(s.get("pause_reason", "")).startswith(DISK_FULL)
    if reason:
        if not s.get("paused") or disk_pause:
            if not disk_pause:
                sup.log(reason)
            s.update(paused=True, pause_reason=reason)
        return False
    if disk_pause:
        s.update(paused=False, pause_reason="")
        sup.log("free disk space is back: launching again")
    return True
