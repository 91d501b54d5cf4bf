"""The per-run wrapper: `python -m retrain_core.supervisor.wrapper RUN_DIR ATTEMPT -- CMD…`.

The launcher starts it in a new session (so it leads the run's process group). It starts
the trainer with `stdout.log`/`stderr.log`, waits for it, and writes `exit.json`
(return code or signal, end time) atomically, so a supervisor that restarts later can
tell "ended" from "vanished". It is a child subreaper: descendants orphaned by a dying
parent (even ones that escaped into their own session) are re-parented here, stay in this
process tree for the supervisor to find, and are reaped here (no zombies).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from retrain_core.error_record import oom_kills

from .files import EXIT_JSON, WRAPPER_JSON, atomic_write_json

PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_GRACE_S = 2.0


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: orphans go to init instead
        return False


def _record(run_dir: Path, attempt: int, **extra) -> None:
    me = psutil.Process()
    atomic_write_json(run_dir / WRAPPER_JSON, {"pid": me.pid, "start_time": me.create_time(),
                                               "attempt": attempt, **extra})


def _reap_everything_now() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _end_leftovers() -> None:
    """The trainer is gone: its leftover descendants get SIGTERM, then SIGKILL."""
    leftovers = psutil.Process().children(recursive=True)
    if not leftovers:
        return
    for proc in leftovers:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while time.monotonic() < deadline and psutil.Process().children(recursive=True):
        _reap_everything_now()
        time.sleep(0.05)
    for proc in psutil.Process().children(recursive=True):
        try:
            proc.kill()
        except psutil.Error:
            pass
    time.sleep(0.05)
    _reap_everything_now()


def watch_parent(grace_s: float = 30.0) -> None:
    """Ray runs (RETRAIN_WRAPPER_PARENT_WATCH=1): when the actor that started this wrapper
    dies (its node shut down, `ray.kill`), nobody would ever stop the run: SIGTERM the run's
    group (the trainer checkpoints), then SIGKILL whatever is left after `grace_s`."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.killpg(os.getpgrp(), signal.SIGTERM)  # this wrapper only records it
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and psutil.Process().children():
            time.sleep(0.5)
        for proc in psutil.Process().children(recursive=True):
            try:
                proc.kill()
            except psutil.Error:
                pass

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    run_dir, attempt, sep, *cmd = argv
    if sep != "--" or not cmd:
        print("usage: wrapper RUN_DIR ATTEMPT -- CMD...", file=sys.stderr)
        return 2
    run_dir, attempt = Path(run_dir), int(attempt)
    # SIGTERM/SIGHUP reach this whole process group when the run is killed: the wrapper
    # must survive them to record the exit. A Python handler (not SIG_IGN) is used so the
    # trainer, after exec, gets the default dispositions back.
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(time.time()))
    signal.signal(signal.SIGHUP, lambda *_: None)
    become_subreaper()
    if os.environ.get("RETRAIN_WRAPPER_PARENT_WATCH") == "1":
        watch_parent()
    _record(run_dir, attempt)
    ooms_before = oom_kills()  # a SIGKILL with this count moved is the kernel's OOM killer
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The launch folder may be gone by a resume; the run reads only its own folder anyway.
    cwd = os.environ.get("RETRAIN_RUN_CWD") or None
    cwd = str(run_dir) if cwd and not os.path.isdir(cwd) else cwd
    with open(run_dir / "stdout.log", "ab") as out, open(run_dir / "stderr.log", "ab") as err:
        try:
            trainer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       env=env, cwd=cwd)
        except OSError as exc:
            err.write(f"retrain wrapper: cannot start {cmd[0]!r}: {exc}\n".encode())
            atomic_write_json(run_dir / EXIT_JSON, {"attempt": attempt, "returncode": 127,
                                                    "signal": None, "ended_at": time.time()})
            return 127
    try:  # not trainer.poll(): that would reap it behind the waitpid loop's back
        trainer_start = psutil.Process(trainer.pid).create_time()
    except psutil.Error:
        trainer_start = None
    _record(run_dir, attempt, trainer_pid=trainer.pid, trainer_start_time=trainer_start)
    status = None
    while status is None:
        # Reap every child (the trainer and adopted orphans), blocking without polling.
        try:
            pid, raw = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == trainer.pid:
            status = raw
    _end_leftovers()
    returncode = os.waitstatus_to_exitcode(status) if status is not None else trainer.returncode
    sig = -returncode if returncode is not None and returncode < 0 else None
    atomic_write_json(run_dir / EXIT_JSON, {
        "attempt": attempt, "returncode": returncode if sig is None else None, "signal": sig,
        "ended_at": time.time(), "trainer_pid": trainer.pid, "sigterm_received": bool(terminated),
        "oom_killed": sig == signal.SIGKILL and ooms_before is not None
        and (oom_kills() or 0) > ooms_before})
    return 128 + sig if sig else (returncode or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
