"""Picking up after an earlier supervisor, failure descriptions, per-attempt log rotation."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from retrain_core.error_record import ERROR_JSON, key, read_error
from retrain_core.tail import tail_lines

from .files import EXIT_JSON, WRAPPER_JSON, now, read_json, same_process
from .launcher import ExitInfo, read_exit
from .proctree import KillJob, processes_with_marker

ROTATED = ("stdout.log", "stderr.log", EXIT_JSON, ERROR_JSON)


def rotate_logs(run_dir: Path, attempt: int) -> None:
    """Before attempt n > 1: stdout.log → stdout.attempt<n-1>.log (likewise stderr, exit)."""
    if attempt <= 1:
        return
    for name in ROTATED:
        src = run_dir / name
        stem, dot, ext = name.partition(".")
        dst = run_dir / f"{stem}.attempt{attempt - 1}{dot}{ext}"
        if src.exists() and not dst.exists():
            src.rename(dst)


def stderr_tail(run_dir: Path, lines: int = 12, max_chars: int = 2000) -> list[str]:
    out = [line.rstrip() for line in tail_lines(run_dir / "stderr.log", 10_000, 16384)
           if line.strip()][-lines:]
    while out and sum(len(x) + 1 for x in out) > max_chars:
        out.pop(0)
    return out


def describe_failure(run_dir: Path, info: ExitInfo) -> tuple[str, str]:
    """(error text for state, the line naming the error: the text's last line).

    The named error is the trainer's exception from error.json when there is one, else
    the signal (the OOM killer named when it did it), else the last stderr line.
    """
    if not info.recorded:
        head = info.reason or "the run's wrapper vanished without recording an exit status"
    elif info.signal:
        try:
            name = __import__("signal").Signals(info.signal).name
        except ValueError:
            name = str(info.signal)
        head = f"killed by signal {info.signal} ({name})"
        end = read_json(run_dir / EXIT_JSON)
        if isinstance(end, dict) and end.get("oom_killed"):
            head += " from the kernel's OOM killer: out of memory"
    elif info.returncode == 75:
        head = "exit code 75 (preempted by SIGTERM, checkpoint saved)"
    else:
        head = f"exit code {info.returncode}"
    record = read_error(run_dir)
    if record is not None:
        tail, last = [str(x) for x in record.get("traceback") or []][-12:], key(record)
    else:
        tail = stderr_tail(run_dir)
        last = head if info.signal or not info.recorded or not tail else tail[-1]
    lines = [head, *tail]
    if lines[-1] != last:
        lines.append(last)
    return "\n".join(lines), last


def _find_wrapper(sup, name: str, attempt: int):
    """The live wrapper of this run's attempt: by wrapper.json, else by env marker."""
    run_dir = sup.run_dir(name)
    rec = read_json(run_dir / WRAPPER_JSON)
    if isinstance(rec, dict) and rec.get("attempt") == attempt:
        handle = sup.launcher.adopt(name, run_dir, attempt, rec.get("pid"), rec.get("start_time"))
        if handle is not None:
            return handle
    for proc in processes_with_marker(sup.spec(name).run_id):
        try:
            cmd = proc.cmdline()
            if "retrain_core.supervisor.wrapper" in cmd and str(attempt) in cmd[cmd.index(
                    "retrain_core.supervisor.wrapper") + 2:][:1]:
                return sup.launcher.adopt(name, run_dir, attempt, proc.pid, proc.create_time())
        except (psutil.Error, ValueError):
            continue
    return None


def adopt_runs(sup) -> None:
    """Bring state.json in line with reality after a supervisor (re)start.

    Live wrappers are adopted (pid + start time checked, so a recycled pid is never taken
    for ours); ended ones are settled from their exit.json; a launch that never happened is
    undone; a run that vanished without a record is killed for good measure (only its own
    processes, found by env marker) and counted as failed.
    """
    for name in sup.order:
        r = sup.run_state(name)
        if r["status"] != "running" and not r.get("launching"):
            continue
        attempt = r["attempt"]
        handle = None
        reattach = getattr(sup.launcher, "reattach", None)  # a launcher that finds runs by name (Ray)
        if reattach is not None:
            handle = reattach(name, sup.run_dir(name), attempt)
        elif r["status"] == "running" and same_process(r["pid"], r["proc_start_time"]):
            handle = sup.launcher.adopt(name, sup.run_dir(name), attempt, r["pid"],
                                        r["proc_start_time"])
        if reattach is None:
            handle = handle or _find_wrapper(sup, name, attempt)
        if handle is not None:
            sup.handles[name] = handle
            r.update(status="running", launching=False, pid=handle.pid, pgid=handle.pgid,
                     proc_start_time=handle.start_time)
            sup.log(f"{name}: adopted running attempt {attempt} (pid {handle.pid})")
            if r.get("kill_requested"):  # the previous supervisor died while killing it
                sup.start_kill(name, r["kill_requested"])
            continue
        info = read_exit(sup.run_dir(name), attempt)
        if info is None and r.get("launching") and r["status"] == "pending":
            r.update(launching=False, attempt=attempt - 1)  # it was never started
            continue
        r["launching"] = False
        if info is None:
            job = KillJob(None, None, sup.spec(name).run_id, grace_s=0.0)
            deadline = time.monotonic() + 10
            while not job.tick() and time.monotonic() < deadline:
                time.sleep(0.05)
            info = ExitInfo(None, None, now(), False)
        r["status"] = "running"
        sup.log(f"{name}: ended while no supervisor was watching")
        outcome = r.pop("kill_requested", None)
        if outcome in ("killed", "stopped"):  # it was being killed: that is how it ended
            r.update(status="killed", exit_code=info.returncode, signal=info.signal,
                     ended_at=info.ended_at or now())
        elif outcome == "restart":
            r.update(status="pending", error="")
            sup.restart_first.append(name)
        else:
            sup.on_exit(name, info)
