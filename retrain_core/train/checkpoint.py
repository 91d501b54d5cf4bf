"""Checkpoints: PEFT adapter + optimizer + `trainer_state.json` (step, data cursor, RNG, SEPA).

`checkpoints/step_<n>/` holds the state after n completed steps; `final/` after the last.
Each is written into a temporary directory, every file fsynced, then swapped in: a crash
at any instant leaves the previous checkpoint or the new one, complete, under its name.
The swap is one `renameat2(RENAME_EXCHANGE)` on Linux; elsewhere the old directory is
renamed aside first, and `recover_checkpoints` (run by `latest_checkpoint`) puts it back
if the crash came between the two renames. Half-written temporary folders are removed
there too.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from retrain_core.atomic import atomic_write_json, atomic_write_text

STATE_FILE = "trainer_state.json"


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": _jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuplify(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    """Every file's data, then the directories naming them, on disk before the swap."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            _fsync_path(path)
    for path in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        _fsync_path(path)
    _fsync_path(directory)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def save_checkpoint(backend, directory: Path, state: dict) -> Path:
    """Write adapter, optimizer and trainer state into `directory` (atomically replaced)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    backend.save(tmp)
    atomic_write_json(tmp / STATE_FILE, {**state, "rng": rng_state(), "optimizer_file": "optimizer.pt"})
    _fsync_tree(tmp)
    if directory.exists() and _exchange(tmp, directory):
        shutil.rmtree(tmp, ignore_errors=True)  # it holds the previous checkpoint now
    else:
        old = directory.with_name(f".{directory.name}.old{os.getpid()}")
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_path(directory.parent)
    return directory


def _complete(directory: Path) -> bool:
    # The adapter lives here (local backend) or in the Tinker service (tinker_state.json
    # names the saved state there).
    return (directory / STATE_FILE).exists() and (
        (directory / "adapter_model.safetensors").exists() or (directory / "tinker_state.json").exists())


LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>old|tmp)\d+$")  # see save_checkpoint


def recover_checkpoints(run_dir: Path) -> None:
    """After a crash mid-save: put a set-aside checkpoint back, drop half-written ones."""
    for parent in (Path(run_dir), Path(run_dir) / "checkpoints"):
        try:
            leftovers = sorted(p for p in parent.iterdir() if LEFTOVER.match(p.name) and p.is_dir())
        except OSError:
            continue
        for path in leftovers:
            match = LEFTOVER.match(path.name)
            target = parent / match["name"]
            if match["kind"] == "old" and not target.exists() and _complete(path):
                os.replace(path, target)  # the crash came between the two renames
            else:
                shutil.rmtree(path, ignore_errors=True)


def read_state(directory: Path) -> dict:
    return json.loads((Path(directory) / STATE_FILE).read_text())


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the most completed steps (final/ or checkpoints/step_<n>/)."""
    run_dir = Path(run_dir)
    recover_checkpoints(run_dir)
    found: list[tuple[int, Path]] = []
    for candidate in [run_dir / "final", *sorted((run_dir / "checkpoints").glob("step_*"))]:
        if candidate.name != "final" and not re.fullmatch(r"step_\d+", candidate.name):
            continue
        if _complete(candidate):
            try:
                found.append((int(read_state(candidate)["step"]), candidate))
            except (ValueError, KeyError, json.JSONDecodeError):
                continue
    return max(found, key=lambda f: f[0])[1] if found else None


def truncate_jsonl(path: Path, keep_before_step: int) -> None:
    """Drop lines of steps ≥ keep_before_step (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", -1)) < keep_before_step:
                kept.append(line)
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            continue  # a torn last line from a kill
    atomic_write_text(path, "".join(k + "\n" for k in kept))
