"""Getting a campaign ready for a new supervisor: repair `state.json`, requeue runs.

`prepare_resume` is what `retrain campaign --resume`, `retrain restart` without a live
supervisor and the TUI's resume share. It runs only while no supervisor holds the
campaign, and it:
- rebuilds a missing or corrupt `state.json` (or a run entry that is missing or has an
  unknown status) from `manifest.json` and the run folders: a live wrapper
  (`wrapper.json`, pid + start time checked) is running and will be adopted; an
  `exit.json` of the latest attempt says how it ended; a run that started and left no
  record of its end counts as killed; a run that never started is pending;
- requeues runs so they continue from their checkpoints: killed runs always (a `stop`
  keeps everything on disk for this), failed ones when asked.
Each change is returned as a sentence for the user.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .campdir import initial_run_state
from .files import (
    EXIT_JSON,
    SQUEEZE,
    STATE,
    WRAPPER_JSON,
    atomic_write_json,
    now,
    read_json,
    same_process,
)
from .validate import RUN_STATUSES, CampaignFileError, load_manifest, load_state

ROTATED_ATTEMPT = re.compile(r"\.attempt(\d+)\.")


def _attempts_seen(run_dir: Path) -> int:
    """The highest attempt number the run folder shows (rotated logs, wrapper, exit)."""
    seen = [int(m.group(1)) for p in _listdir(run_dir) if (m := ROTATED_ATTEMPT.search(p))]
    seen = [n + 1 for n in seen]  # attempt<n> logs were rotated away by attempt n + 1
    for name in (WRAPPER_JSON, EXIT_JSON):
        rec = read_json(run_dir / name)
        if isinstance(rec, dict) and isinstance(rec.get("attempt"), int):
            seen.append(rec["attempt"])
    return max(seen, default=0)


def _listdir(path: Path) -> list[str]:
    try:
        return [p.name for p in path.iterdir()]
    except OSError:
        return []


def rebuild_run(run_dir: Path) -> tuple[dict, str]:
    """A state entry for one run from what its folder holds, and how it was decided."""
    r = initial_run_state()
    attempt = _attempts_seen(run_dir)
    r["attempt"] = attempt
    if attempt == 0:
        return r, "pending (never started)"
    wrapper = read_json(run_dir / WRAPPER_JSON)
    if (isinstance(wrapper, dict) and wrapper.get("attempt") == attempt
            and same_process(wrapper.get("pid"), wrapper.get("start_time"))):
        r.update(status="running", pid=wrapper["pid"], pgid=wrapper["pid"],
                 proc_start_time=wrapper["start_time"])
        return r, f"running attempt {attempt} (wrapper pid {wrapper['pid']}, will be adopted)"
    end = read_json(run_dir / EXIT_JSON)
    if isinstance(end, dict) and end.get("attempt") == attempt:
        code, sig = end.get("returncode"), end.get("signal")
        r.update(exit_code=code, signal=sig, ended_at=end.get("ended_at"))
        if code == 0:
            r["status"] = "succeeded"
        elif code == 75 or end.get("sigterm_received"):
            r.update(status="killed", error="stopped (SIGTERM)")
        else:
            r.update(status="failed", error=f"exit code {code}" if sig is None else f"killed by signal {sig}")
        return r, f"{r['status']} on attempt {attempt} (from {EXIT_JSON})"
    r.update(status="killed", ended_at=now(), error="ended while no state was kept (no exit record)")
    return r, f"killed on attempt {attempt} (started, no record of its end)"


def _fresh_state(root: Path, manifest: dict) -> tuple[dict, list[str]]:
    runs, notes = {}, []
    for entry in manifest["runs"]:
        runs[entry["name"]], how = rebuild_run(root / entry["dir"])
        notes.append(f"  {entry['name']}: {how}")
    squeeze_cfg = manifest.get("squeeze") if isinstance(manifest.get("squeeze"), dict) else {}
    analysis = read_json(root / SQUEEZE / "analysis.json")
    if isinstance(analysis, dict) and analysis.get("recommended_rank") is not None:
        squeeze = {"status": "done", "error": "", "run": ""}
    else:
        squeeze = {"status": "pending" if squeeze_cfg.get("enabled") else "none", "error": "", "run": ""}
    state = {"campaign": manifest.get("campaign") or root.name, "updated_at": now(),
             "supervisor": {"pid": None, "start_time": None, "heartbeat": None, "paused": False,
                            "pause_reason": "", "stopping": False},
             "runs": runs, "squeeze": squeeze}
    return state, notes


def prepare_resume(root: str | Path, requeue: tuple[str, ...] = ("killed",),
                   runs: tuple[str, ...] = ()) -> list[str]:
    """Repair state.json and requeue runs with a status in `requeue` plus the named `runs`.

    Call only while no supervisor is alive. Raises CampaignFileError when manifest.json
    itself is unusable (nothing can be rebuilt without it). Returns what was done.
    """
    root = Path(root)
    manifest = load_manifest(root)
    notes: list[str] = []
    try:  # campaigns made before folders were user-only
        mode = root.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(root, 0o700)
            notes.append(f"{root}: was open to other users (mode {mode:o}); now 700 (user only)")
    except OSError:
        pass  # not ours to change: say nothing, the lock and the files still work for us
    changed = False
    try:
        state = load_state(root)
    except CampaignFileError as exc:
        state, how = _fresh_state(root, manifest)
        notes += [f"{exc}: rebuilt {STATE} from {root / 'manifest.json'} and the run folders:", *how]
        changed = True
    for entry in manifest["runs"]:
        name = entry["name"]
        r = state["runs"].get(name)
        if isinstance(r, dict) and r.get("status") in RUN_STATUSES:
            for key, value in initial_run_state().items():
                r.setdefault(key, value)
            continue
        what = "missing" if r is None else f"unusable (status {r.get('status')!r})" if isinstance(r, dict) else "unusable"
        state["runs"][name], how = rebuild_run(root / entry["dir"])
        notes.append(f"{root / STATE}: run {name!r} was {what}; rebuilt from its folder: {how}")
        changed = True
    for entry in manifest["runs"]:
        name = entry["name"]
        r = state["runs"][name]
        before = r["status"]
        if before == "running" or (name not in runs and before not in requeue):
            continue
        r.update(status="pending", error="", launching=False, exit_code=None, signal=None, ended_at=None)
        r.pop("kill_requested", None)
        notes.append(f"{name}: {before} run queued again (continues from its checkpoint)")
        changed = True
    if changed:
        state["updated_at"] = now()
        atomic_write_json(root / STATE, state)
    return notes


def has_work(root: str | Path) -> bool:
    """Whether a supervisor started now would have anything to do."""
    try:
        state = load_state(root)
    except CampaignFileError:
        return True
    squeeze = state.get("squeeze", {}).get("status")
    return squeeze in ("pending", "running") or any(
        isinstance(r, dict) and (r.get("status") in ("pending", "running") or r.get("launching"))
        for r in state["runs"].values())


def resume_or_explain(root: Path, retry_failed: bool = False) -> int | None:
    """The CLI's `--resume` preparation: None to go on and start a supervisor, else an
    exit code after telling the user why not (unusable manifest, nothing left to do)."""
    import sys

    try:
        notes = prepare_resume(root, ("killed", "failed") if retry_failed else ("killed",))
    except CampaignFileError as exc:
        print(f"retrain campaign: cannot resume: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk while rewriting state.json
        print(f"retrain campaign: cannot resume: could not write {Path(root) / STATE}: {exc}",
              file=sys.stderr)
        return 1
    for note in notes:
        print(note)
    if has_work(root):
        return None
    state = load_state(root)
    counts: dict[str, int] = {}
    for r in state["runs"].values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    hint = "; add --retry-failed to run the failed ones again" if counts.get("failed") else ""
    print(f"nothing to continue in {root}: every run has ended ({summary}){hint}")
    return 0
