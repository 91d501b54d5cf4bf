"""`retrain status [DIR|LOGS_DIR] [--json]`: campaigns, runs, progress, failures, ETA."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from retrain_core.plan import campaign_parallelism, eta_seconds
from retrain_core.tail import read_last_records

from . import api
from .diskspace import low_space, min_free_gb
from .files import read_json
from .validate import finite_or_none, json_safe, read_campaign

METRIC_KEYS = ("mean_reward", "correct_rate", "running_correct_rate", "loss", "sepa_lambda",
               "step_time_s", "throttle_wait_s", "time")


DEFAULT_LOGS_DIR = "logs"


def add_arguments(parser) -> None:
    parser.add_argument("target", nargs="?", default=DEFAULT_LOGS_DIR,
                        help="a campaign directory, or a logs directory holding campaigns")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until Ctrl-C; with --json, one "
                             "JSON document per line")
    parser.add_argument("--count", type=int, default=0,
                        help="with --watch: stop after this many refreshes")


def run_summary(root: Path, entry: dict, rstate: dict) -> dict:
    records = read_last_records(root / str(entry.get("dir") or f"runs/{entry['name']}")
                                / "metrics.jsonl", 20)
    last = records[-1] if records else {}
    # metrics count steps from 0: the last record of step k means k + 1 steps are done.
    step = last["step"] + 1 if _count(last.get("step")) is not None else None
    max_steps = _count(entry.get("max_steps"))
    # Any number in a metrics line can be absurd (a diverged run logs 1e308): keep what
    # is finite, and an ETA that overflows is no ETA.
    times = [t for t in (finite_or_none(r.get("step_time_s")) for r in records) if t is not None]
    step_time = statistics.median(times) if times else None
    eta = None
    if rstate.get("status") == "running" and step_time is not None and max_steps:
        eta = finite_or_none(max(0, max_steps - (step or 0)) * step_time)
    return {"name": entry["name"], "condition": entry.get("condition"), "seed": entry.get("seed"),
            "status": str(rstate.get("status") or "unknown"), "attempt": rstate.get("attempt", 0),
            "step": step, "max_steps": max_steps, "exit_code": rstate.get("exit_code"),
            "signal": rstate.get("signal"), "error": str(rstate.get("error") or ""),
            "pid": rstate.get("pid"), "launched_at": rstate.get("launched_at"),
            "ended_at": rstate.get("ended_at"), "step_time_s": step_time, "eta_s": eta,
            "stalled": rstate.get("stalled") if rstate.get("status") == "running" else None,
            "best": _best(root / str(entry.get("dir") or f"runs/{entry['name']}")),
            "metrics": {k: finite_or_none(last[k]) for k in METRIC_KEYS if k in last}}


def _best(run_dir: Path) -> dict | None:
    """The checkpoint kept by [eval] keep_best: {"dir", "step", "mode", "correct_rate"}."""
    state = read_json(run_dir / "best" / "trainer_state.json", None)
    best = state.get("best") if isinstance(state, dict) else None
    if not isinstance(best, dict):
        return None
    return {"dir": str(run_dir / "best"), "step": best.get("step"), "mode": best.get("mode"),
            "correct_rate": finite_or_none(best.get("correct_rate"))}


def _count(value) -> int | None:
    """A non-negative int (a step or step count), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def campaign_summary(root: Path) -> dict:
    manifest, state, problems = read_campaign(root)
    sup = state.get("supervisor", {})
    runs = []
    for e in manifest.get("runs", []):
        rstate = state.get("runs", {}).get(e["name"])
        runs.append(run_summary(root, e, rstate if isinstance(rstate, dict) else {}))
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    # Campaign ETA: remaining steps of unfinished runs at the observed median step time,
    # spread over the runs that can still go at once.
    left = [r for r in runs if r["status"] in ("pending", "running")]
    width = campaign_parallelism(manifest, state, len(left))  # GPU pool bound included
    eta = finite_or_none(eta_seconds(
        sum(max(0, (r["max_steps"] or 0) - (r["step"] or 0)) for r in left),
        [r["step_time_s"] for r in runs], width.runs_at_once)) if left else None
    alive = api.supervisor_alive(root)
    heartbeat = finite_or_none(sup.get("heartbeat"))
    # A live supervisor writes state.json every second: an old one means it cannot (a full
    # disk), and the runs it shows as running may be long dead.
    stale = alive and heartbeat is not None and time.time() - heartbeat > STALE_STATE_S
    if stale:
        problems = [*problems, (f"{root / 'state.json'} has not been updated for "
                               f"{time.time() - heartbeat:.0f} s although the supervisor runs: "
                               f"what it says may be out of date (is the disk full?)")]
    if not alive or stale:
        eta = None  # nothing is progressing, or nothing we can see
        for r in runs:
            r["eta_s"] = None
    return {"dir": str(root), "campaign": str(manifest.get("campaign") or root.name),
            "problems": problems,
            "disk": low_space(root, min_free_gb(manifest)) if manifest else "",
            "created": manifest.get("created"),
            "supervisor": {"alive": alive, "pid": sup.get("pid"),
                           "paused": sup.get("paused", False), "pause_reason": sup.get("pause_reason", ""),
                           "stopping": sup.get("stopping", False),
                           "heartbeat_age_s": time.time() - heartbeat if heartbeat else None},
            "counts": counts, "eta_s": eta,
            "parallelism": {"runs_at_once": width.runs_at_once, "bound": width.bound,
                            "detail": width.detail},
            "squeeze": {**state.get("squeeze", {}), "recommended_rank": (
                manifest.get("squeeze") if isinstance(manifest.get("squeeze"), dict) else {}
            ).get("recommended_rank")},
            "runs": runs}


STALE_STATE_S = 30.0


def _fmt_eta(seconds: float | None) -> str:
    if finite_or_none(seconds) is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def print_campaign(c: dict) -> None:
    sup = c["supervisor"]
    unfinished = any(r["status"] in ("pending", "running") for r in c["runs"])
    if sup["alive"]:
        state = "supervisor running"
    elif unfinished:
        why = "stopped" if sup["stopping"] else "no supervisor"
        state = f"{why}: continue with retrain campaign --resume {c['dir']}"
    else:
        state = "finished"
    if sup["paused"]:
        state += f", paused ({sup['pause_reason']})"
    counts = ", ".join(f"{n} {k}" for k, n in sorted(c["counts"].items()))
    width = c["parallelism"]
    print(f"{c['campaign']}  [{state}]  {counts}  ETA {_fmt_eta(c['eta_s'])}  "
          f"({width['runs_at_once']} at once: {width['detail']})")
    print(f"  {c['dir']}")
    if c["disk"]:
        print(f"  ! {c['disk']}")
    for problem in c["problems"]:
        print(f"  ! {problem}")
    sq = c["squeeze"]
    if sq.get("status") not in (None, "none"):
        rank = sq.get("recommended_rank")
        print(f"  squeeze: {sq['status']}" + (f", recommended rank {rank}" if rank else "")
              + (f" ({str(sq['error']).splitlines()[0]})" if sq.get("error") else ""))
    for r in c["runs"]:
        step = f"{r['step'] if r['step'] is not None else '-'}/{r['max_steps'] or '-'}"
        m = r["metrics"]
        metrics = "  ".join(f"{k}={m[k]:.3g}" for k in ("mean_reward", "correct_rate", "loss")
                            if isinstance(m.get(k), (int, float)))
        end = ""
        if r["status"] in ("failed", "killed"):
            end = f"exit {r['exit_code']}" if r["signal"] is None else f"signal {r['signal']}"
            if r["error"]:
                end += f": {r['error'].splitlines()[-1][:100]}"
        if r.get("best") and r["best"]["correct_rate"] is not None:
            metrics += f"  best={r['best']['correct_rate']:.3g}@{r['best']['step']}"
        if r.get("stalled"):  # running, but no new metrics for longer than its bound
            end = f"STALLED {r['stalled']['idle_s']:.0f}s (bound {r['stalled']['bound_s']:.0f}s)"
        print(f"  {r['name']:34s} {r['status']:9s} a{r['attempt']} {step:>9s}  "
              f"{metrics}  {end or ('ETA ' + _fmt_eta(r['eta_s']) if r['eta_s'] is not None else '')}")


def no_campaigns_yet(logs_dir: Path, as_json: bool) -> int:
    """A fresh checkout has no logs/ until the first launch: that is an answer, not an error."""
    if as_json:
        print(json.dumps({"campaigns": []}))
    else:
        print(f"no campaigns yet ({logs_dir}/ does not exist); launch one with "
              "`retrain campaign CONFIG.toml` or `retrain-tui CONFIG.toml`")
    return 0


def main(args) -> int:
    if getattr(args, "watch", None):
        from retrain_core.export import watch_loop

        return watch_loop(args, main, max(0.2, args.watch), args.count)
    target = Path(args.target)
    campaigns = api.find_campaigns(target)
    if not campaigns and ((target / "state.json").exists() or (target / "runs").is_dir()):
        campaigns = [target]  # a campaign directory that lost its manifest: say so
    if not campaigns and not target.exists():
        if args.target == DEFAULT_LOGS_DIR:
            return no_campaigns_yet(target, args.json)
        print(f"retrain status: {target} does not exist", file=sys.stderr)
        return 2
    summaries = [campaign_summary(c) for c in campaigns]
    # A campaign file that cannot be read is named in the output and makes the exit code 1.
    code = 1 if any(c["problems"] for c in summaries) else 0
    if args.json:
        print(json.dumps({"campaigns": json_safe(summaries)}, indent=1, allow_nan=False))
        return code
    if not summaries:
        print(f"no campaigns under {target}")
    for c in summaries:
        print_campaign(c)
    return code
