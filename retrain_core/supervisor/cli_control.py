"""`retrain kill|restart DIR RUN`, `retrain stop|pause|unpause DIR`."""

from __future__ import annotations

import sys
import time

from . import api

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
    manifest = api.read_manifest(root)
    if not manifest:
        print(f"retrain {command}: {root} is not a campaign directory", file=sys.stderr)
        return 2
    run = getattr(args, "run", None)
    names = [r["name"] for r in manifest.get("runs", [])]
    if run is not None and run not in names:
        print(f"retrain {command}: no run {run!r} in {root} (runs: {', '.join(names)})",
              file=sys.stderr)
        return 2
    if not api.supervisor_alive(root):
        print(f"retrain {command}: no supervisor is running for {root}; start one with "
              f"`retrain campaign --resume {root}`", file=sys.stderr)
        return 1
    before = api.read_state(root).get("runs", {}).get(run, {}).get("attempt", 0)
    api.send(root, command, run)
    print(f"sent {command}" + (f" {run}" if run else "") + f" to {root}")
    if args.wait > 0 and not _wait_done(root, command, run, before, args.wait):
        print(f"retrain {command}: not carried out within {args.wait:g} s", file=sys.stderr)
        return 1
    return 0


def _wait_done(root, command: str, run: str | None, attempt_before: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.read_state(root)
        sup = state.get("supervisor", {})
        runs = state.get("runs", {})
        if command == "kill" and runs.get(run, {}).get("status") in ("killed", "succeeded", "failed"):
            return True
        if command == "restart" and runs.get(run, {}).get("attempt", 0) > attempt_before:
            return True
        if command == "pause" and sup.get("paused"):
            return True
        if command == "unpause" and not sup.get("paused"):
            return True
        if command == "stop" and not api.supervisor_alive(root):
            return True
        time.sleep(0.1)
    return False
