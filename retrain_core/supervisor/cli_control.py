"""`retrain kill|restart DIR RUN`, `retrain stop|pause|unpause DIR`.

Every outcome is a sentence and an exit code: 0 done (or, with --wait, carried out or
queued), 1 not possible now (no supervisor, a full disk, not carried out in time),
2 a wrong campaign or run name. `restart` without a live supervisor starts one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from . import api
from .validate import CampaignFileError, load_manifest

RUN_COMMANDS = ("kill", "restart")


def add_arguments(parser) -> None:
    parser.add_argument("campaign_dir", help="the campaign directory (logs/campaign_…)")
    if parser.prog.split()[-1] in RUN_COMMANDS:
        parser.add_argument("run", help="run name, e.g. maxrl+gtpo_s42")
    parser.add_argument("--wait", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds until the supervisor has carried it out")


def main(args) -> int:
    command = args.command
    root = args.campaign_dir
    try:
        manifest = load_manifest(root)
    except CampaignFileError as exc:
        print(f"retrain {command}: {root} is not a campaign directory ({exc})", file=sys.stderr)
        return 2
    run = getattr(args, "run", None)
    names = [r["name"] for r in manifest["runs"]]
    if run is not None and run not in names:
        print(f"retrain {command}: no run {run!r} in {root} (runs: {', '.join(names)})",
              file=sys.stderr)
        return 2
    if not api.supervisor_alive(root):
        if command == "restart":
            return _restart_without_supervisor(root, run, args.wait)
        print(f"retrain {command}: no supervisor is running for {root}, so nothing is running "
              f"there to {command}; continue the campaign with `retrain campaign --resume {root}` "
              f"or one run with `retrain restart {root} RUN`", file=sys.stderr)
        return 1
    before = api.read_state(root).get("runs", {}).get(run, {}).get("attempt", 0)
    try:
        sent = api.send(root, command, run)
    except OSError as exc:
        print(f"retrain {command}: could not write the command into {Path(root) / 'control'}: "
              f"{exc}", file=sys.stderr)
        return 1
    print(f"sent {command}" + (f" {run}" if run else "") + f" to {root}")
    if args.wait > 0:
        outcome = _wait_done(root, command, run, before, args.wait, sent)
        if outcome == "queued":
            print(f"queued: {run} waits for a free worker (max_workers)")
        elif outcome is None:
            print(f"retrain {command}: not carried out within {args.wait:g} s", file=sys.stderr)
            return 1
    return 0


def _restart_without_supervisor(root, run: str, wait: float) -> int:
    """Queue the run, start a supervisor and hand it a restart (so the run goes first)."""
    from .rebuild import prepare_resume

    try:
        notes = prepare_resume(root, requeue=(), runs=(run,))
        before = api.read_state(root).get("runs", {}).get(run, {}).get("attempt", 0)
        sent = api.send(root, "restart", run)
        api.start_supervisor(Path(root))
    except (CampaignFileError, OSError) as exc:
        print(f"retrain restart: cannot restart {run}: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(note)
    if not api.wait_started(root, timeout=60):
        print(f"retrain restart: the supervisor did not start; see {Path(root) / 'supervisor.log'}",
              file=sys.stderr)
        return 1
    print(f"started a supervisor for {root} to restart {run}")
    if wait > 0:
        outcome = _wait_done(root, "restart", run, before, wait, sent)
        if outcome == "queued":
            print(f"queued: {run} waits for a free worker (max_workers)")
        elif outcome is None:
            print(f"retrain restart: not carried out within {wait:g} s", file=sys.stderr)
            return 1
    return 0


def _wait_done(root, command: str, run: str | None, attempt_before: int, timeout: float,
               sent: Path) -> str | None:
    """"done", "queued" (a restart taken in but waiting behind max_workers), or None."""
    deadline = time.monotonic() + timeout
    while True:
        state = api.read_state(root)
        sup = state.get("supervisor", {})
        r = state.get("runs", {}).get(run, {})
        if command == "kill" and r.get("status") in ("killed", "succeeded", "failed"):
            return "done"
        if command == "restart" and r.get("attempt", 0) > attempt_before:
            return "done"
        if command == "pause" and sup.get("paused"):
            return "done"
        if command == "unpause" and not sup.get("paused"):
            return "done"
        if command == "stop" and not api.supervisor_alive(root):
            return "done"
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    # The supervisor consumed the command and the run is pending: it waits for a worker.
    if command == "restart" and not sent.exists() and r.get("status") == "pending":
        return "queued"
    return None
