"""Copying a run's files between its node-local folder and the campaign folder on the head.

No shared filesystem is assumed (docs/ARCHITECTURE.md, "Ray launcher"). Three kinds of file:

- *append* files (`*.jsonl`, `*.log`): streamed by byte offset, whole lines only until the
  run has ended. The offset is the size of the head's copy, so a supervisor that restarts
  (or reconnects to the run's actor) continues exactly where the head's file ends: no
  duplicate, no gap. Each file is identified by its node-side inode (`token`); a file the
  trainer rewrote (it trims metrics.jsonl to the checkpoint when it resumes) has a new
  inode and is sent whole, replacing the head's copy atomically.
- *trees*: `final/`, `best/` and each `checkpoints/<name>/`, copied whole (the trainer renames
  them into place complete) and renamed into place on the head, so a checkpoint on the
  head is always complete: `restart` works on any node, auto-squeeze finds the adapter.
- *whole* files (everything else: exit.json, wrapper.json, …): copied when their size or
  mtime changes, written atomically.

Hidden names (temporary files and folders) are never copied, nor the files the supervisor
writes into run folders on the head (`HEAD_OWNED`). The head remembers tokens and
signatures in `.ray_sync.json` in the run folder. Nothing here imports Ray: both sides are
plain functions over folders (tests run them without a cluster).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tomllib
from pathlib import Path

import tomli_w

from retrain_core.atomic import atomic_write_bytes, atomic_write_json

from .files import read_json

SYNC_JSON = ".ray_sync.json"
APPEND_SUFFIXES = (".jsonl", ".log")
MAX_BATCH_BYTES = 8 << 20  # per pull; the rest comes with the next one (trees always whole)
ROTATED = re.compile(r"\.attempt\d+\.")  # earlier attempts' logs stay on the head only
STEP_DIR = re.compile(r"step_(\d+)")
TREES = ("final", "best")  # checkpoint folders at the top of a run folder (and checkpoints/<name>/)
PLACEMENT_JSON = "placement.json"  # where the attempt runs (written by the head's launcher)
# Written into the run folder by the supervisor on the head: never sent to a node or back.
HEAD_OWNED = (PLACEMENT_JSON, "events.jsonl")


def unit_of(rel: str) -> tuple[str, str]:
    """(kind, unit path) of a file path relative to the run folder."""
    parts = rel.split("/")
    if parts[0] in TREES and len(parts) > 1:
        return "tree", parts[0]
    if parts[0] == "checkpoints" and len(parts) > 2:
        return "tree", "/".join(parts[:2])
    if rel.endswith(APPEND_SUFFIXES):
        return "append", rel
    return "whole", rel


def walk(folder: Path) -> list[str]:
    """Relative paths of the regular files under `folder`, hidden names skipped, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath).relative_to(folder)
        out += [(base / f).as_posix() for f in filenames if not f.startswith(".")]
    return sorted(out)


def _token(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


def _sig(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def _tree_sig(folder: Path, rels: list[str]) -> str:
    digest = hashlib.sha1()
    for rel in rels:
        digest.update(f"{rel}|{_sig((folder / rel).stat())}\n".encode())
    return digest.hexdigest()


def units(folder: Path) -> dict[str, tuple[str, list[str]]]:
    """unit path -> (kind, its files) for everything under `folder`."""
    found: dict[str, tuple[str, list[str]]] = {}
    for rel in walk(folder):
        if rel in HEAD_OWNED:
            continue
        kind, unit = unit_of(rel)
        found.setdefault(unit, (kind, []))[1].append(rel)
    return found


# -- node side -----------------------------------------------------------------------------
def describe(folder: Path) -> dict:
    """The sync record matching `folder` as it is now (after seeding it)."""
    record: dict = {"append": {}, "whole": {}, "tree": {}}
    for unit, (kind, rels) in units(folder).items():
        try:
            if kind == "tree":
                record["tree"][unit] = _tree_sig(folder, rels)
            elif kind == "append":
                record["append"][unit] = _token((folder / unit).stat())
            else:
                record["whole"][unit] = _sig((folder / unit).stat())
        except OSError:
            continue
    return record


def collect(folder: Path, request: dict, ended: bool, budget: int = MAX_BATCH_BYTES) -> dict:
    """What the head lacks, given its `request` ({"append": {path: [token, offset]},
    "whole": {path: sig}, "tree": {path: sig}}). `ended`: the run is over, so a last line
    without its newline is sent too. Returns {"ops": [...], "complete": bool}; complete =
    the run ended and everything was sent."""
    ops: list[list] = []
    left = budget
    truncated = False
    for unit, (kind, rels) in units(folder).items():
        if left <= 0:
            truncated = True
            break
        try:
            if kind == "append":
                op = _append_op(folder / unit, unit, request.get("append", {}).get(unit), ended, left)
            elif kind == "whole":
                st = (folder / unit).stat()
                op = None if request.get("whole", {}).get(unit) == _sig(st) else [
                    "whole", unit, _sig(st), (folder / unit).read_bytes()]
            else:
                sig = _tree_sig(folder, rels)
                op = None if request.get("tree", {}).get(unit) == sig else [
                    "tree", unit, sig, {rel[len(unit) + 1:]: (folder / rel).read_bytes() for rel in rels}]
        except OSError:  # replaced while we looked (a checkpoint being renamed): next pull
            truncated = True
            continue
        if op is None:
            continue
        size = len(op[3]) if kind != "tree" else sum(len(b) for b in op[3].values())
        if kind == "append" and op[-1]:  # more than the budget allowed
            truncated = True
        ops.append(op[:4])
        left -= size
    return {"ops": ops, "complete": ended and not truncated}


def _append_op(path: Path, unit: str, have, ended: bool, budget: int):
    """["append"|"reset", path, token, bytes, more?] or None when the head is up to date."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        token = _token(st)
        offset = have[1] if have and have[0] == token and have[1] <= st.st_size else 0
        kind = "append" if have and have[0] == token and have[1] <= st.st_size else "reset"
        f.seek(offset)
        data = f.read(max(budget, 1))
        more = f.tell() < st.st_size
    if not ended or more:
        data = data[:data.rfind(b"\n") + 1]  # whole lines only while the file still grows
    if kind == "append" and not data:
        return None
    return [kind, unit, token, data, more]


# -- head side -----------------------------------------------------------------------------
def read_sync(run_dir: Path) -> dict:
    record = read_json(run_dir / SYNC_JSON)
    if not isinstance(record, dict):
        record = {}
    for key in ("append", "whole", "tree"):
        record.setdefault(key, {})
    return record


def write_sync(run_dir: Path, record: dict) -> None:
    atomic_write_json(run_dir / SYNC_JSON, record)


def request_for(run_dir: Path, record: dict) -> dict:
    """The pull request: for each append file the head's size is the offset to send from."""
    appends = {}
    for rel, token in record["append"].items():
        try:
            appends[rel] = [token, (run_dir / rel).stat().st_size]
        except OSError:
            appends[rel] = [token, 0]
    return {"append": appends, "whole": dict(record["whole"]), "tree": dict(record["tree"])}


def _safe(run_dir: Path, rel: str) -> Path:
    path = (run_dir / rel).resolve()
    if rel.startswith("/") or ".." in rel.split("/") or not path.is_relative_to(run_dir.resolve()):
        raise ValueError(f"refusing to write outside the run folder: {rel!r}")
    return path


def apply(run_dir: Path, ops: list, record: dict) -> int:
    """Write a pull's ops into the head's run folder; returns the bytes written."""
    written = 0
    for kind, rel, mark, data in ops:
        path = _safe(run_dir, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "append":
            with open(path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        elif kind in ("reset", "whole"):
            atomic_write_bytes(path, data)
        elif kind == "tree":
            _replace_tree(path, data)
        written += len(data) if kind != "tree" else sum(len(b) for b in data.values())
        if kind == "tree":
            record["tree"][rel] = mark
        elif kind == "whole":
            record["whole"][rel] = mark
        elif record["append"].get(rel) != mark or kind == "reset":
            record["append"][rel] = mark
    return written


def _replace_tree(path: Path, files: dict[str, bytes]) -> None:
    """Build the folder beside its target, then rename it in: readers never see half."""
    tmp = path.with_name(f".{path.name}.incoming")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        target = _safe(tmp, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


# -- seeding a node ------------------------------------------------------------------------
def seed_payload(root: Path, run_dir: Path) -> dict[str, bytes]:
    """What a node needs to start or resume a run: {path relative to the campaign: bytes}.

    The run folder without earlier attempts' logs, only its newest checkpoint tree (plus
    final/), and the campaign's data/ (run configs name it as ../../data/…)."""
    payload: dict[str, bytes] = {}
    found = units(run_dir)
    steps = [(int(m.group(1)), u) for u in found if u.startswith("checkpoints/")
             and (m := STEP_DIR.fullmatch(u.split("/", 1)[1]))]
    newest = max(steps)[1] if steps else None
    for unit, (kind, rels) in found.items():
        if kind == "tree" and unit not in ("final", newest) and unit.startswith("checkpoints/") \
                and STEP_DIR.fullmatch(unit.split("/", 1)[1]):
            continue
        for rel in rels:
            if not ROTATED.search(rel):
                payload[(run_dir.relative_to(root) / rel).as_posix()] = (run_dir / rel).read_bytes()
    data = root / "data"
    if data.is_dir():
        for rel in walk(data):
            payload[f"data/{rel}"] = (data / rel).read_bytes()
    return payload


def write_seed(local_root: Path, payload: dict[str, bytes]) -> None:
    for rel, data in payload.items():
        target = _safe(local_root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def localize_config(config: Path, run_dir: Path, throttle_dir: Path) -> None:
    """Point the run's config at node-local folders (the head's paths do not exist here)."""
    cfg = tomllib.loads(config.read_text(encoding="utf-8"))
    cfg.setdefault("logging", {})["log_dir"] = str(run_dir)
    backend = cfg.setdefault("backend", {})
    if backend.get("throttle_dir"):
        throttle_dir.mkdir(parents=True, exist_ok=True)
        backend["throttle_dir"] = str(throttle_dir)
    atomic_write_bytes(config, tomli_w.dumps(cfg).encode("utf-8"))
