"""Atomic file writes: readers see the old file or the new one, never half of one.

Every file the project writes for others to read (state, manifest, checkpoints, adapters,
control commands, the user's campaign TOML) goes through here: a temporary file in the
same directory, fsync, rename over the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _target_mode(path: Path, mode: int | None) -> int:
    """An existing file keeps its permission bits; a new one gets 0o644 unless told."""
    if mode is not None:
        return mode
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o644


def _temp_beside(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        os.fchmod(fd, _target_mode(path, mode))
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
    # Encoded as given: the caller's line endings survive byte for byte (the editor's promise).
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: str | os.PathLike, data, mode: int | None = None) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n", mode)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None],
                 mode: int | None = None) -> None:
    """For writers that take a path (safetensors): `write(tmp)`, fsync, rename over `path`."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _target_mode(path, mode))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
