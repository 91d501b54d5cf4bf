"""How a run's process is started and watched: the `Launcher` seam and `LocalLauncher`.

A launcher starts one attempt of a run and reports when it ended; killing is done by the
supervisor's process control (`proctree`). A Ray or Slurm launcher plugs in here.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from .files import EXIT_JSON, RUN_ID_ENV, read_json, same_process

TRAINER_ENV = "RETRAIN_TRAINER_CMD"  # replaces `python -m retrain_core.cli run` (stand-ins, tests)
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
NODE_LOST = "node lost"  # ExitInfo.reason of a run whose machine left the cluster (not its fault)
ASSIGNED_ENV = "RETRAIN_GPUS"  # the share the supervisor gave (the trainer's CUDA view is narrowed)


@dataclass
class LaunchSpec:
    """What a launcher needs to know about a run (a `config.RunSpec` has the same names)."""

    name: str
    label: str
    run_id: str  # "<campaign>/<run>": the env marker every descendant inherits
    cwd: str = ""
    # CUDA_VISIBLE_DEVICES for the run: "0,1" = its GPUs, "" = none; None = leave it alone
    visible_devices: str | None = None


@dataclass
class RunHandle:
    name: str
    attempt: int
    pid: int
    pgid: int
    start_time: float
    run_dir: Path
    popen: subprocess.Popen | None = None  # None: adopted from an earlier supervisor


@dataclass
class ExitInfo:
    returncode: int | None
    signal: int | None
    ended_at: float | None
    recorded: bool  # False: the wrapper vanished without writing exit.json
    reason: str = ""  # why, when not recorded and the launcher knows (Ray: "node lost: …")


class Launcher(Protocol):
    def start(self, run_spec: LaunchSpec, run_dir: Path, attempt: int) -> RunHandle: ...

    def poll(self, handle: RunHandle) -> ExitInfo | None: ...

    def terminate(self, handle: RunHandle) -> None: ...


def trainer_command(config: Path, run_dir: Path, spec: LaunchSpec) -> list[str]:
    prefix = shlex.split(os.environ.get(TRAINER_ENV, "")) or [
        sys.executable, "-m", "retrain_core.cli", "run"]
    return [*prefix, str(config), "--run-dir", str(run_dir), "--run-name", spec.name,
            "--condition", spec.label]


def read_exit(run_dir: Path, attempt: int) -> ExitInfo | None:
    data = read_json(run_dir / EXIT_JSON)
    if not isinstance(data, dict) or data.get("attempt") != attempt:
        return None
    return ExitInfo(data.get("returncode"), data.get("signal"), data.get("ended_at"), True)


def launcher_for(manifest: dict, log=print):
    """The campaign's launcher: `[campaign] launcher` as recorded in its manifest."""
    if manifest.get("launcher", "local") == "ray":
        from .ray_launcher import RayLauncher  # Ray is an optional extra

        return RayLauncher(manifest, log)
    return LocalLauncher()


class LocalLauncher:
    """Each attempt = `python -m retrain_core.supervisor.wrapper` in a new session."""

    def start(self, run_spec: LaunchSpec, run_dir: Path, attempt: int) -> RunHandle:
        run_dir = Path(run_dir).resolve()
        cmd = [sys.executable, "-m", "retrain_core.supervisor.wrapper", str(run_dir),
               str(attempt), "--", *trainer_command(run_dir / "config.toml", run_dir, run_spec)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{RUN_ID_ENV: run_spec.run_id})
        if run_spec.cwd:
            env["RETRAIN_RUN_CWD"] = run_spec.cwd
        if run_spec.visible_devices is not None:
            # The trainer then uses the first GPU it sees (train.backend.pick_device).
            env[VISIBLE_ENV] = env[ASSIGNED_ENV] = run_spec.visible_devices
        with open(run_dir / "wrapper.log", "ab") as log:
            popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env=env, start_new_session=True, close_fds=True)
        try:
            start_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:  # already gone and reaped by nobody yet: still has a start
            start_time = 0.0
        return RunHandle(run_spec.name, attempt, popen.pid, popen.pid, start_time, run_dir, popen)

    def adopt(self, name: str, run_dir: Path, attempt: int, pid: int, start_time: float
              ) -> RunHandle | None:
        if same_process(pid, start_time) is None:
            return None
        return RunHandle(name, attempt, pid, pid, start_time, Path(run_dir))

    def poll(self, handle: RunHandle) -> ExitInfo | None:
        if handle.popen is not None:
            code = handle.popen.poll()
            if code is None:
                return None
        elif same_process(handle.pid, handle.start_time) is not None:
            return None
        info = read_exit(handle.run_dir, handle.attempt)
        if info is not None:
            return info
        code = handle.popen.returncode if handle.popen is not None else None
        return ExitInfo(None, -code if code is not None and code < 0 else None, None, False)

    def terminate(self, handle: RunHandle) -> None:
        """SIGTERM to the run's process group (only if the leader is still ours)."""
        if same_process(handle.pid, handle.start_time) is None:
            return
        try:
            os.killpg(handle.pgid, 15)
        except ProcessLookupError:
            pass
