"""The campaign supervisor: `python -m retrain_core.supervisor.daemon DIR [--grace-seconds S]`.

One per campaign (a file lock held for its lifetime). It adopts runs an earlier supervisor
left behind, launches pending runs (serial, or up to max_workers with a stagger, each on
its own share of the GPU pool), watches them, obeys control commands, retries failures,
trips the circuit breaker, runs the auto-squeeze and writes state.json atomically on every
change plus a heartbeat.

Grace (SIGTERM to SIGKILL when a run is stopped): `--grace-seconds`, which is remembered in
state.json so a later --resume keeps it, else `[campaign] grace_seconds`, else (0) the
larger of 30 s and 3 × the run's median step time, so a trainer always has time to finish
its step and write the checkpoint.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

import psutil
from filelock import FileLock, Timeout

from retrain_core import gpus
from retrain_core.tail import read_last_records
from retrain_core.throttle import wake_waiters

from .control import receive
from .diskspace import DISK_FULL, may_launch
from .files import (
    MANIFEST,
    RUNS,
    STATE,
    SUPERVISOR_LOCK,
    SUPERVISOR_LOG,
    SUPERVISOR_PID,
    THROTTLE,
    atomic_write_json,
    now,
    read_json,
)
from .launcher import NODE_LOST, ExitInfo, LaunchSpec, launcher_for
from .lockholder import describe_holder
from .orphans import adopt_escapees
from .orphans import sweep as sweep_orphans
from .proctree import KillJob
from .recovery import adopt_runs, describe_failure, rotate_logs
from .squeeze_hook import NO_SUCCESS, SqueezeHook
from .watch import RunWatch

TICK_S = 0.1
MIN_GRACE_S = 30.0
GRACE_STEPS = 3  # default grace = max(MIN_GRACE_S, GRACE_STEPS × median step time)
HEARTBEAT_S = 1.0
BREAKER_FAILURES = 3


class AlreadyRunning(Exception):
    pass


class Supervisor:
    def __init__(self, root: str | os.PathLike, grace_s: float | None = None, launcher=None,
                 echo: bool = False) -> None:
        self.root = Path(root).resolve()
        self.manifest = read_json(self.root / MANIFEST)
        self.state = read_json(self.root / STATE)
        if not isinstance(self.manifest, dict) or not isinstance(self.state, dict):
            raise FileNotFoundError(f"{self.root} is not a campaign directory (no manifest/state)")
        if grace_s is not None:  # an override from the command line, kept for later resumes
            self.state["supervisor"]["grace_seconds"] = float(grace_s)
        self.grace_s = self.state["supervisor"].get("grace_seconds") or float(
            self.manifest.get("grace_seconds") or 0)  # 0: per run, from its step times
        self.pool: list[int] = []
        self.launcher = launcher or launcher_for(self.manifest, self.log)
        self.echo = echo
        self.order = [r["name"] for r in self.manifest["runs"]]
        self.handles: dict = {}
        self.kills: dict[str, KillJob] = {}
        self.after_kill: dict[str, str] = {}
        self.restart_first: list[str] = []
        self.vanished: dict[str, ExitInfo] = {}
        self.failure_lines: list[str] = []
        self.squeeze = SqueezeHook(self.root, self.manifest, self.state, self.log)
        self.watch = RunWatch(self)  # stalls, [[campaign.rules]], webhook notifications
        self._last_write = 0.0
        self._exit_requested = False

    # -- helpers -----------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        try:
            with open(self.root / SUPERVISOR_LOG, "a", encoding="utf-8") as f:
                f.write(line + "\n")
            if self.echo:
                print(line, flush=True)
        except OSError:  # a closed terminal must not take the supervisor down
            pass

    def run_state(self, name: str) -> dict:
        return self.state["runs"][name]

    def spec(self, name: str, visible_devices: str | None = None) -> LaunchSpec:
        entry = next(r for r in self.manifest["runs"] if r["name"] == name)
        return LaunchSpec(name, entry["condition"], f"{self.manifest['campaign']}/{name}",
                          self.manifest.get("cwd", ""), visible_devices)

    def grace(self, name: str) -> float:
        """Seconds between SIGTERM and SIGKILL for this run (see the module docstring)."""
        if self.grace_s:
            return self.grace_s
        times = [r["step_time_s"] for r in read_last_records(self.run_dir(name) / "metrics.jsonl", 50)
                 if isinstance(r.get("step_time_s"), (int, float)) and r["step_time_s"] > 0]
        return max(MIN_GRACE_S, GRACE_STEPS * statistics.median(times) if times else 0.0)

    def busy_gpus(self) -> set[int]:
        """GPUs held by live runs (adopted ones keep the share recorded in state.json)."""
        return {g for name in self.handles for g in self.run_state(name).get("gpus") or []}

    def run_dir(self, name: str) -> Path:
        return self.root / RUNS / name

    def write_state(self) -> None:
        sup = self.state["supervisor"]
        sup["heartbeat"] = self.state["updated_at"] = now()
        atomic_write_json(self.root / STATE, self.state)
        self._last_write = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------
    def run(self) -> int:
        lock = FileLock(str(self.root / SUPERVISOR_LOCK), timeout=0, thread_local=False)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            # Name the process the kernel says holds it: supervisor.pid may name a dead one.
            raise AlreadyRunning(f"{self.root / SUPERVISOR_LOCK} is held by "
                                 f"{describe_holder(self.root / SUPERVISOR_LOCK)}: another "
                                 f"supervisor is already running for {self.root}") from None
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._request_exit)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal going away is fine
            self._start()
            while not self._finished():
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - keep supervising: runs outlive a bad tick
                    self.log("error in the supervisor loop:\n" + traceback.format_exc())
                    time.sleep(1.0)
                time.sleep(TICK_S)
            if not self._exit_requested:
                self.watch.campaign_ended()
            self.write_state()
            self.log("supervisor exiting: " + ("asked to" if self._exit_requested else "campaign over"))
            return 0
        finally:
            lock.release()

    def _request_exit(self, *_):
        # Runs live in their own sessions and keep going; a later --resume adopts them.
        self._exit_requested = True

    def _start(self) -> None:
        me = psutil.Process()
        self.state["supervisor"].update(pid=me.pid, start_time=me.create_time(), stopping=False)
        atomic_write_json(self.root / SUPERVISOR_PID, {"pid": me.pid, "start_time": me.create_time()})
        self.log(f"supervisor started (pid {me.pid})")
        adopt_escapees()  # orphans of a SIGKILLed wrapper come here, not to init
        # Manifests from before GPU placement have no "devices": leave CUDA alone for them.
        # A launcher that assigns GPUs itself (Ray) gets no local pool.
        if "devices" in self.manifest and not getattr(self.launcher, "assigns_gpus", False):
            self.pool = gpus.resolve_pool(str(self.manifest["devices"]))
            self.state["supervisor"]["gpu_pool"] = self.pool
            per_run = int(self.manifest.get("gpus_per_run") or 1)
            self.log(f"GPU pool {self.pool}, {per_run} per run" if self.pool
                     else "no GPU in the pool: runs use the CPU")
        adopt_runs(self)
        self.write_state()

    def _finished(self) -> bool:
        if self._exit_requested:
            return True
        if self.handles or self.kills or self.squeeze.busy():
            return False
        if self.state["supervisor"]["stopping"]:
            return True
        pending = [n for n in self.order if self.run_state(n)["status"] == "pending"]
        if pending:
            return False
        if self.squeeze.maybe_start():
            return False
        if self.squeeze.status == "pending":  # the campaign is over and nothing succeeded
            self.state["squeeze"].update(status="failed", error=NO_SUCCESS)
        return True

    def tick(self) -> None:
        changed = False
        for cmd, note in receive(self.root):
            if cmd is None:
                self.log(note)
                continue
            changed |= self.apply(cmd["command"], cmd.get("run"))
        for name, handle in list(self.handles.items()):
            if name in self.kills:
                continue
            info = self.launcher.poll(handle)
            if info is not None and not info.recorded:
                # The wrapper died without a record (killed from outside): its trainer may
                # still run as an orphan. End the run's leftovers before anything else.
                self.kills[name] = self.kill_job(name, None, handle)
                self.after_kill[name] = "vanished"
                self.vanished[name] = info
            elif info is not None:
                del self.handles[name]
                self.on_exit(name, info)
                changed = True
        for name, job in list(self.kills.items()):
            if job.tick():
                self.on_killed(name)
                changed = True
        changed |= self.schedule()
        changed |= self.squeeze.maybe_start()
        changed |= self.squeeze.tick()
        changed |= self.watch.tick()
        if changed or time.monotonic() - self._last_write >= HEARTBEAT_S:
            self.write_state()

    # -- control -----------------------------------------------------------------------
    def apply(self, command: str, run: str | None) -> bool:
        sup = self.state["supervisor"]
        if command in ("kill", "restart") and run not in self.state["runs"]:
            self.log(f"{command}: no run named {run!r}")
            return False
        self.log(f"command: {command}" + (f" {run}" if run else ""))
        if command == "pause":
            sup.update(paused=True, pause_reason="paused by the user")
        elif command == "unpause":
            sup.update(paused=False, pause_reason="")
            self.failure_lines.clear()
        elif command == "stop":
            sup["stopping"] = True
            for name in list(self.handles):
                self.start_kill(name, "stopped")  # killed now, continued by --resume
            self.squeeze.stop()
        elif command == "kill":
            if run in self.handles:
                self.start_kill(run, "killed")
            elif self.run_state(run)["status"] == "pending":
                self.run_state(run).update(status="killed", ended_at=now(), error="killed before it started")
        elif command == "restart":
            if run in self.handles:
                self.start_kill(run, "restart")
            else:
                self.run_state(run).update(status="pending", error="")
                self.restart_first.append(run)
        return True

    def start_kill(self, name: str, outcome: str) -> None:
        if name in self.kills:
            self.after_kill[name] = outcome if outcome == "killed" else self.after_kill[name]
            self.run_state(name)["kill_requested"] = self.after_kill[name]
            return
        handle = self.handles[name]
        wrapper = None
        try:
            wrapper = psutil.Process(handle.pid) if handle.pid else None  # None: not here (Ray)
            if wrapper is not None and abs(wrapper.create_time() - handle.start_time) > 0.01:
                wrapper = None  # pid reused: never signal it
        except psutil.Error:
            wrapper = None
        self.kills[name] = self.kill_job(name, wrapper, handle)
        self.after_kill[name] = outcome
        # Persisted so that a supervisor restarted mid-kill finishes the job.
        self.run_state(name)["kill_requested"] = outcome

    def kill_job(self, name: str, wrapper: psutil.Process | None, handle):
        """How the run's process tree is ended: here (`KillJob`), or on its node when the
        launcher runs it elsewhere (Ray: the same KillJob, run by the run's actor)."""
        remote = getattr(self.launcher, "kill_job", None)
        if remote is not None:
            return remote(handle, self.grace(name))
        return KillJob(wrapper, handle.pgid if wrapper else None, self.spec(name).run_id,
                       self.grace(name))

    def on_killed(self, name: str) -> None:
        del self.kills[name]
        handle = self.handles.pop(name, None)
        info = self.launcher.poll(handle) if handle is not None else None
        if self.manifest.get("throttle"):
            wake_waiters(self.root / THROTTLE)  # its slot is free: waiters need not poll
        outcome = self.after_kill.pop(name, "killed")
        self.run_state(name).pop("kill_requested", None)
        if outcome == "vanished":
            self.on_exit(name, self.vanished.pop(name))
            return
        if (info is not None and info.recorded and info.returncode == 0
                and outcome in ("killed", "stopped")):
            self.on_exit(name, info)  # it finished on its own before the kill reached it
            return
        r = self.run_state(name)
        r.update(status="killed", ended_at=now(), exit_code=info.returncode if info else None,
                 signal=info.signal if info else None)
        self.log(f"{name}: killed (attempt {r['attempt']})")
        if outcome == "stopped":
            r.update(stopped=True, error="stopped with the campaign; `retrain campaign --resume` "
                                         "continues it from its checkpoint")
        if outcome == "restart":
            r.update(status="pending", error="")
            self.restart_first.append(name)

    # -- exits, retries, circuit breaker ---------------------------------------------------
    def on_exit(self, name: str, info: ExitInfo, why: str = "") -> None:
        sweep_orphans(self)  # whatever the run left behind that reached us
        r = self.run_state(name)
        r.update(exit_code=info.returncode, signal=info.signal, ended_at=info.ended_at or now())
        if info.recorded and info.returncode == 0:
            r.update(status="succeeded", error="")
            self.failure_lines.clear()
            self.log(f"{name}: succeeded (attempt {r['attempt']})")
            return
        error, last_line = (why, why) if why else describe_failure(self.run_dir(name), info)
        r.update(status="failed", error=error)
        self.log(f"{name}: failed (attempt {r['attempt']}): {last_line}")
        if not info.reason.startswith(NODE_LOST):  # a machine going away is not the runs' fault
            self.failure_lines.append(last_line)
            recent = self.failure_lines[-BREAKER_FAILURES:]
            if len(recent) == BREAKER_FAILURES and len(set(recent)) == 1:
                self.state["supervisor"].update(
                    paused=True, pause_reason=f"circuit breaker: {BREAKER_FAILURES} consecutive "
                                              f"failures with the same error: {last_line}")
                self.log(self.state["supervisor"]["pause_reason"])
        if r.get("retries", 0) < int(self.manifest.get("max_retries", 0)):
            r.update(status="pending", retries=r.get("retries", 0) + 1)
            self.log(f"{name}: will retry from its checkpoint ({r['retries']}/"
                     f"{self.manifest['max_retries']})")

    # -- scheduling --------------------------------------------------------------------
    def capacity(self) -> int:
        if not self.manifest.get("parallel"):
            return 1
        return int(self.manifest.get("max_workers") or 0) or len(self.order)

    def schedule(self) -> bool:
        sup = self.state["supervisor"]
        launched = False
        if not sup["stopping"] and not may_launch(self):  # a (nearly) full disk: nothing starts
            return False
        while not sup["stopping"] and len(self.handles) < self.capacity():
            # An explicit restart is honoured even while launching is paused.
            pending = [n for n in self.restart_first if self.run_state(n)["status"] == "pending"]
            if not sup["paused"]:
                pending += [n for n in self.order if self.run_state(n)["status"] == "pending"]
            if not pending:
                break
            stagger = float(self.manifest.get("stagger_seconds") or 0)
            last = max((r["launched_at"] or 0 for r in self.state["runs"].values()), default=0)
            if stagger > 0 and last and now() - last < stagger:
                break
            share = gpus.pick(self.pool, self.busy_gpus(), int(self.manifest.get("gpus_per_run") or 1))
            if share is None:
                break  # the pool is exhausted: the run waits for a live one to end
            self.launch(pending[0], share)
            launched = True
        return launched

    def launch(self, name: str, share: list[int] | None = None) -> None:
        if name in self.restart_first:
            self.restart_first.remove(name)
        r = self.run_state(name)
        attempt = r["attempt"] + 1
        # Record the intent first: a supervisor killed right after the spawn must find the
        # new wrapper on --resume instead of starting the run a second time.
        before = {k: r.get(k) for k in ("attempt", "launching", "launched_at")}
        r.pop("stopped", None)
        r.update(attempt=attempt, launching=True, launched_at=now(), gpus=share or [])
        try:
            self.write_state()
        except OSError as exc:  # the intent cannot be recorded: no spawn, no attempt counted
            r.update(before)
            self.state["supervisor"].update(
                paused=True, pause_reason=f"{DISK_FULL}: cannot write {self.root / STATE}: {exc}")
            self.log(f"{name}: not launched: {self.state['supervisor']['pause_reason']}")
            return
        rotate_logs(self.run_dir(name), attempt)
        visible = None if "devices" not in self.manifest else gpus.visible_devices(share or [])
        try:
            handle = self.launcher.start(self.spec(name, visible), self.run_dir(name), attempt)
        except OSError as exc:
            # No process: the attempt number stays, but it is a failure like any other for
            # the retries and the circuit breaker.
            r.update(attempt=attempt - 1, launching=False, status="running")
            self.log(f"{name}: could not start: {exc}")
            self.on_exit(name, ExitInfo(None, None, now(), False), why=f"could not start: {exc}")
            return
        self.handles[name] = handle
        r.update(status="running", launching=False, pid=handle.pid, pgid=handle.pgid,
                 proc_start_time=handle.start_time, exit_code=None, signal=None,
                 ended_at=None, error="")
        self.log(f"{name}: launched attempt {attempt} (pid {handle.pid})"
                 + (f" on GPU {visible}" if visible else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="retrain-supervisor")
    ap.add_argument("campaign_dir")
    ap.add_argument("--grace-seconds", type=float, default=None,
                    help="SIGTERM-to-SIGKILL grace (kept for later resumes)")
    ap.add_argument("--foreground", action="store_true", help="print progress to stdout")
    args = ap.parse_args(argv)
    try:
        return Supervisor(args.campaign_dir, args.grace_seconds, echo=args.foreground).run()
    except AlreadyRunning as exc:
        print(f"retrain: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
