"""Auto-squeeze: after the first run succeeds, analyse its final adapter.

Runs `retrain squeeze ADAPTER --threshold X --analysis-out DIR/squeeze/analysis.json` as a
subprocess; `state["squeeze"]` follows it (none/pending/running/done/failed) and the
recommended rank goes into manifest.json. A failure here never stops the campaign.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from retrain_core.tail import tail_lines

from .files import (
    MANIFEST,
    RUNS,
    SQUEEZE,
    atomic_write_json,
    process_start_time,
    read_json,
    same_process,
)

STOPPED = "stopped with the campaign"
NO_SUCCESS = "no run succeeded"
SQUEEZE_ENV = "RETRAIN_SQUEEZE_CMD"  # replaces `python -m retrain_core.cli squeeze` (tests)
# The squeeze command runs behind this prefix: SIGKILL when the supervisor dies (Linux
# PR_SET_PDEATHSIG, kept across exec), so an analysis never outlives it and a resumed
# supervisor never finds one still running beside its own. (Not preexec_fn: not
# thread-safe.)
DIE_WITH_PARENT = [sys.executable, "-c", (
    "import ctypes, os, sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() == int(sys.argv[1]):\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n")]


class SqueezeHook:
    def __init__(self, root: Path, manifest: dict, state: dict, log) -> None:
        self.root, self.manifest, self.state, self.log = root, manifest, state, log
        self.proc: subprocess.Popen | None = None
        sq = state.setdefault("squeeze", {"status": "none", "error": "", "run": ""})
        # An earlier supervisor died or was stopped mid-analysis: do it again, once its
        # analysis is surely gone (where the death signal is not available it may live on).
        if sq.get("status") == "running" or sq.get("error") in (STOPPED, NO_SUCCESS):
            left = same_process(sq.get("pid"), sq.get("start_time"))
            if left is not None:
                left.kill()
                left.wait(10)
            sq.update(status="pending", error="", pid=None, start_time=None)

    @property
    def status(self) -> str:
        return self.state["squeeze"]["status"]

    def busy(self) -> bool:
        return self.proc is not None

    def maybe_start(self) -> bool:
        """Start the analysis if it is due and a run has succeeded; True if state changed."""
        if self.status != "pending" or self.proc is not None:
            return False
        done = [n for n, r in self.state["runs"].items() if r["status"] == "succeeded"]
        if not done:
            return False
        run = done[0]
        sq_dir = self.root / SQUEEZE
        sq_dir.mkdir(exist_ok=True)
        cfg = self.manifest.get("squeeze", {})
        prefix = shlex.split(os.environ.get(SQUEEZE_ENV, "")) or [
            sys.executable, "-m", "retrain_core.cli", "squeeze"]
        # The trainer saves its last adapter in RUN_DIR/final (train.loop); an older layout
        # (and the test stand-in) used checkpoints/final.
        adapter = self.root / RUNS / run / "final"
        if not adapter.is_dir() and (self.root / RUNS / run / "checkpoints" / "final").is_dir():
            adapter = self.root / RUNS / run / "checkpoints" / "final"
        cmd = [*prefix, str(adapter),
               "--threshold", str(cfg.get("threshold", 0.95)),
               "--analysis-out", str(sq_dir / "analysis.json")]
        if cfg.get("target_ranks"):
            cmd += ["--target-ranks", ",".join(str(k) for k in cfg["target_ranks"])]
        if cfg.get("source_rank"):
            cmd += ["--source-rank", str(cfg["source_rank"])]
        if cfg.get("device"):
            cmd += ["--device", cfg["device"]]
        if cfg.get("wandb_project"):
            cmd += ["--wandb-project", cfg["wandb_project"]]
        with open(sq_dir / "squeeze.log", "ab") as log:
            try:
                self.proc = subprocess.Popen([*DIE_WITH_PARENT, str(os.getpid()), *cmd],
                                             stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                self._finish(False, f"cannot start squeeze: {exc}")
                return True
        self.state["squeeze"].update(status="running", run=run, error="", pid=self.proc.pid,
                                     start_time=process_start_time(self.proc.pid))
        self.log(f"squeeze: analysing {adapter.relative_to(self.root)}")
        return True

    def tick(self) -> bool:
        if self.proc is None or self.proc.poll() is None:
            return False
        code, self.proc = self.proc.returncode, None
        analysis = read_json(self.root / SQUEEZE / "analysis.json")
        rank = analysis.get("recommended_rank") if isinstance(analysis, dict) else None
        if code == 0 and rank is not None:
            self._finish(True, "", rank)
        else:
            tail = "\n".join(tail_lines(self.root / SQUEEZE / "squeeze.log", 8)).strip()
            self._finish(False, f"squeeze exited with code {code}" + (f": {tail}" if tail else ""))
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self._finish(False, STOPPED)

    def _finish(self, ok: bool, error: str, rank: int | None = None) -> None:
        self.state["squeeze"].update(status="done" if ok else "failed", error=error)
        if ok:
            self.manifest.setdefault("squeeze", {})["recommended_rank"] = rank
            atomic_write_json(self.root / MANIFEST, self.manifest)
            self.log(f"squeeze: recommended rank {rank}")
        else:
            self.log(f"squeeze failed (the campaign goes on): {error}")
