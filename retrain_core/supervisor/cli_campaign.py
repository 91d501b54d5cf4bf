"""`retrain campaign CONFIG [--logs-dir logs] [--foreground]` and `retrain campaign --resume DIR`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from retrain_core.tail import tail_lines

from . import api
from .files import SUPERVISOR_LOG


def add_arguments(parser) -> None:
    parser.add_argument("config", nargs="?", help="campaign TOML")
    parser.add_argument("--resume", metavar="DIR",
                        help="start a new supervisor for an existing campaign directory")
    parser.add_argument("--retry-failed", action="store_true",
                        help="with --resume: run failed runs again too (killed runs always continue)")
    parser.add_argument("--logs-dir", default="logs", help="where campaign directories go")
    parser.add_argument("--foreground", action="store_true",
                        help="run the supervisor in this terminal and print progress")
    parser.add_argument("--grace-seconds", type=float, default=None, metavar="S",
                        help="SIGTERM-to-SIGKILL grace when a run is stopped, kept for later "
                             "--resume (default: [campaign] grace_seconds, else max(30 s, "
                             "3 × the run's median step time))")


def _log_tail(root: Path, lines: int = 15) -> str:
    return "\n".join(tail_lines(root / SUPERVISOR_LOG, lines))


def main(args) -> int:
    from retrain_core.config import ConfigError

    from .campdir import LaunchError, create_campaign_dir
    from .daemon import AlreadyRunning, Supervisor

    if args.grace_seconds is not None and not 0 < args.grace_seconds < float("inf"):
        print(f"retrain campaign: --grace-seconds must be a finite number of seconds > 0, "
              f"got {args.grace_seconds}",
              file=sys.stderr)
        return 2
    if bool(args.config) == bool(args.resume):
        print("retrain campaign: give either CONFIG or --resume DIR", file=sys.stderr)
        return 2
    if args.resume:
        root = Path(args.resume)
        if not (root / "manifest.json").exists():
            print(f"retrain campaign: {root} is not a campaign directory", file=sys.stderr)
            return 2
        if api.supervisor_alive(root):
            print(f"retrain campaign: a supervisor is already running for {root}", file=sys.stderr)
            return 3
        from .rebuild import resume_or_explain

        code = resume_or_explain(root, args.retry_failed)
        if code is not None:
            return code
    else:
        from retrain_core.config import load_campaign

        try:
            campaign = load_campaign(args.config)
            root = create_campaign_dir(campaign, args.logs_dir)
        except ConfigError as exc:
            print(f"retrain campaign: invalid config\n{exc}", file=sys.stderr)
            return 2
        except LaunchError as exc:
            print(f"retrain campaign: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"retrain campaign: {exc}", file=sys.stderr)
            return 2
    if args.foreground:
        print(f"campaign directory: {root}", flush=True)
        try:
            return Supervisor(root, args.grace_seconds, echo=True).run()
        except AlreadyRunning as exc:
            print(f"retrain campaign: {exc}", file=sys.stderr)
            return 3
    since = time.time()
    api.start_supervisor(root, args.grace_seconds)
    if not api.wait_started(root, since=since):
        print(f"retrain campaign: the supervisor did not start; see {root / SUPERVISOR_LOG}:\n"
              f"{_log_tail(root)}", file=sys.stderr)
        return 1
    print(root)
    return 0
