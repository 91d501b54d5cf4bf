"""The node side of a Ray campaign: one detached actor per run attempt (`RunActor`).

It runs the run exactly as the local launcher does (the same wrapper, in its own session,
with the same environment marker), in a node-local run folder seeded from the head, and
answers the head's pulls (`ray_stream.collect`). Killing uses the same `proctree.KillJob`
as a local campaign, on the node: SIGTERM → grace (the trainer checkpoints, exits 75) →
SIGKILL of whatever is left, grandchildren included; Ray is never trusted to do it. If the
actor itself dies (node shutdown, `ray.kill`), the wrapper sees its parent go and ends the
run's process tree itself (`RETRAIN_WRAPPER_PARENT_WATCH`).

The node-local folder is `$RETRAIN_RAY_NODE_DIR/<node id>/<campaign>/runs/<run>`
(default base: `<tmp>/retrain-ray`), mirroring the campaign layout so the run config's
relative paths (`../../data/…`) hold.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import psutil

from . import ray_stream
from .launcher import LaunchSpec, LocalLauncher
from .proctree import KillJob

NODE_DIR_ENV = "RETRAIN_RAY_NODE_DIR"
WATCH_PARENT_ENV = "RETRAIN_WRAPPER_PARENT_WATCH"  # the wrapper ends the run if the actor dies


def node_base() -> Path:
    return Path(os.environ.get(NODE_DIR_ENV) or Path(tempfile.gettempdir()) / "retrain-ray")


class RunActor:
    """Created by `ray_launcher.RayLauncher` as a named, detached, threaded actor."""

    def __init__(self) -> None:
        self.handle = None
        self.run_dir: Path | None = None
        self.run_id = ""
        self.info: dict | None = None
        self.kill: KillJob | None = None
        self.lock = threading.Lock()

    def start(self, campaign: str, spec: dict, attempt: int, payload: dict[str, bytes],
              env: dict[str, str]) -> dict:
        """Seed the node-local folder, start the wrapper; return where and what it runs.

        Idempotent: a second call (a supervisor that died mid-launch) returns the first's."""
        import ray

        if self.info is not None:
            return self.info

        ctx = ray.get_runtime_context()
        node_id = ctx.get_node_id()
        local_root = node_base() / node_id[:12] / campaign
        run_dir = local_root / "runs" / spec["name"]
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh copy of the head's, every attempt
        ray_stream.write_seed(local_root, payload)
        run_dir.mkdir(parents=True, exist_ok=True)
        ray_stream.localize_config(run_dir / "config.toml", run_dir, local_root / "throttle")
        record = ray_stream.describe(run_dir)
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        os.environ.update(env)
        os.environ[WATCH_PARENT_ENV] = "1"
        if gpu_ids:  # Ray narrowed CUDA_VISIBLE_DEVICES to them: the trainer takes the first
            os.environ["RETRAIN_GPUS"] = ",".join(gpu_ids)
        launch = LaunchSpec(spec["name"], spec["label"], spec["run_id"], str(run_dir), None)
        with self.lock:
            self.handle = LocalLauncher().start(launch, run_dir, attempt)
            self.run_dir, self.run_id = run_dir, spec["run_id"]
        self.info = {"node_id": node_id, "node_ip": ray.util.get_node_ip_address(),
                     "hostname": socket.gethostname(), "gpu_ids": gpu_ids,
                     "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                     "local_dir": str(run_dir), "pid": self.handle.pid,
                     "start_time": self.handle.start_time, "sync": record}
        return self.info

    def placement(self) -> dict | None:
        """What `start` returned (None if it never ran): a reattaching supervisor asks."""
        return self.info

    def pull(self, request: dict, budget: int = ray_stream.MAX_BATCH_BYTES) -> dict:
        """New data for the head; `ended` is decided before looking, so nothing is missed."""
        if self.handle is None:
            return {"ops": [], "complete": False, "ended": False}
        ended = self.handle.popen.poll() is not None
        out = ray_stream.collect(self.run_dir, request, ended, budget)
        out["ended"] = ended
        return out

    def kill_tree(self, grace_s: float) -> bool:
        """End the run's whole tree on this node (blocks for at most grace + a few seconds)."""
        if self.handle is None or self.handle.popen.poll() is not None:
            return False
        with self.lock:
            if self.kill is None:
                try:
                    wrapper = psutil.Process(self.handle.pid)  # our own child: not reused
                except psutil.Error:
                    wrapper = None
                self.kill = KillJob(wrapper, self.handle.pgid if wrapper else None,
                                    self.run_id, grace_s)
            job = self.kill
        while not job.tick():
            time.sleep(0.05)
        self.handle.popen.wait(timeout=30)
        return True

    def alive(self) -> dict:
        return {"pid": os.getpid(), "running": self.handle is not None
                and self.handle.popen.poll() is None}
