"""`[campaign] launcher = "ray"`: a campaign's runs spread over the nodes of a Ray cluster.

The supervisor stays on the machine where the campaign was launched and remains the only
writer of state.json and of the campaign folder. Each run attempt is one named, detached
actor (`ray_node.RunActor`, name `retrain:<campaign>/<run>#<attempt>`, namespace
`retrain`) asking Ray for `gpus_per_run` GPUs (Ray sets CUDA_VISIBLE_DEVICES); a restart
asks for the node the run used last when it is still alive (soft node affinity). Nothing
here blocks the supervisor loop: actor creation, pulls and kills are Ray calls whose
results are checked with `ray.wait(timeout=0)`.

Files come back by pulling (`ray_stream`), every `PULL_S` per run; the run counts as ended
only once its actor reports the wrapper's exit *and* everything it wrote is on the head.
A new supervisor finds live actors by name (`reattach`). An actor that dies (its node left
the cluster) ends the attempt as failed with "node lost: …"; `max_retries` then restarts
the run elsewhere from the last checkpoint copied to the head.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from retrain_core.atomic import atomic_write_json

from . import ray_stream
from .files import now, read_json
from .launcher import NODE_LOST, ExitInfo, LaunchSpec, RunHandle, read_exit
from .ray_node import RunActor
from .ray_stream import PLACEMENT_JSON

NAMESPACE = "retrain"
PULL_S = 0.5
WAIT_NOTE_S = 30.0  # an attempt not placed after this long is named in supervisor.log
FORWARD_ENV = ("RETRAIN_TRAINER_CMD", "RETRAIN_RAY_NODE_DIR", "WANDB_*", "HF_*")
EXTRA_ENV = "RETRAIN_RAY_ENV"  # more names (or NAME_* prefixes) to pass to the runs, comma-separated


class RayUnavailable(OSError):
    """Ray is not installed or the cluster cannot be reached (the message says which)."""


def actor_name(campaign: str, run: str, attempt: int) -> str:
    return f"retrain:{campaign}/{run}#{attempt}"


def forwarded_env(environ=os.environ) -> dict[str, str]:
    """The supervisor's variables a run on another node gets too (hooks, wandb, HF)."""
    patterns = list(FORWARD_ENV) + [p.strip() for p in environ.get(EXTRA_ENV, "").split(",") if p.strip()]
    return {k: v for k, v in environ.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


@dataclass
class RayHandle(RunHandle):
    actor: object = None
    start_ref: object = None
    pull_ref: object = None
    last_pull: float = 0.0
    placement: dict = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    waiting_said: bool = False
    info: ExitInfo | None = None  # set once the attempt is over and fully copied back


class RayLauncher:
    """The `Launcher` seam (docs/ARCHITECTURE.md) over a Ray cluster."""

    assigns_gpus = True  # Ray places runs on GPUs: the supervisor's local pool is not used

    def __init__(self, manifest: dict, log=print) -> None:
        self.address = manifest.get("ray_address") or os.environ.get("RAY_ADDRESS") or "auto"
        self.campaign = manifest["campaign"]
        cpu_only = str(manifest.get("devices", "auto")).strip() in ("cpu", "mps")
        self.num_gpus = 0 if cpu_only else int(manifest.get("gpus_per_run") or 1)
        self.log = log
        self._ray = None
        self._actor_cls = None

    # -- connection --------------------------------------------------------------------
    def ray(self):
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError as exc:
            raise RayUnavailable("[campaign] launcher = \"ray\" needs Ray on this machine: "
                                 "pip install 'retrain-tui[ray]'") from exc
        check_reachable(self.address)
        try:
            ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False,
                     logging_level="WARNING")
        except Exception as exc:  # ConnectionError, RuntimeError, … (varies by Ray version)
            raise RayUnavailable(f"cannot reach the Ray cluster at {self.address!r} "
                                 f"([campaign] ray_address / RAY_ADDRESS): {exc}") from exc
        self.log(f"connected to the Ray cluster at {self.address}")
        self._ray = ray
        return ray

    # -- Launcher protocol -------------------------------------------------------------
    def start(self, run_spec: LaunchSpec, run_dir: Path, attempt: int) -> RayHandle:
        self.ray()
        run_dir = Path(run_dir).resolve()
        # get_if_exists: a supervisor that died mid-launch left this attempt's actor (start is idempotent)
        options = {"name": actor_name(self.campaign, run_spec.name, attempt), "namespace": NAMESPACE,
                   "lifetime": "detached", "get_if_exists": True, "max_concurrency": 4,
                   "num_gpus": self.num_gpus, "num_cpus": 0 if self.num_gpus else 1}
        last = (read_json(run_dir / PLACEMENT_JSON) or {}).get("node_id")
        if last and self._node_alive(last):
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(last, soft=True)
        actor = self._actor_class().options(**options).remote()
        payload = ray_stream.seed_payload(run_dir.parent.parent, run_dir)
        spec = {"name": run_spec.name, "label": run_spec.label, "run_id": run_spec.run_id}
        ref = actor.start.remote(self.campaign, spec, attempt, payload, forwarded_env())
        return RayHandle(run_spec.name, attempt, None, None, 0.0, run_dir, None,
                         actor=actor, start_ref=ref)

    def reattach(self, name: str, run_dir: Path, attempt: int) -> RayHandle | None:
        """The live actor of this attempt, found by name (a supervisor restarted)."""
        try:
            ray = self.ray()
            actor = ray.get_actor(actor_name(self.campaign, name, attempt), namespace=NAMESPACE)
        except (RayUnavailable, ValueError) as exc:
            if isinstance(exc, RayUnavailable):
                self.log(str(exc))
            return None
        return RayHandle(name, attempt, None, None, 0.0, Path(run_dir).resolve(), None,
                         actor=actor, start_ref=actor.placement.remote())

    def adopt(self, name: str, run_dir: Path, attempt: int, pid=None, start_time=None):
        return self.reattach(name, run_dir, attempt)

    def poll(self, handle: RayHandle) -> ExitInfo | None:
        self.sync_step(handle)
        return handle.info

    def terminate(self, handle: RayHandle) -> None:
        if handle.actor is not None and handle.info is None:
            handle.actor.kill_tree.remote(0.0)

    def kill_job(self, handle: RayHandle | None, grace_s: float) -> RayKillJob:
        return RayKillJob(self, handle, grace_s)

    # -- one non-blocking step of a run's life -------------------------------------------
    def sync_step(self, handle: RayHandle) -> None:
        if handle.info is not None:
            return
        ray = self._ray
        try:
            if handle.start_ref is not None:
                if not ray.wait([handle.start_ref], timeout=0)[0]:  # no node has room yet
                    if not handle.waiting_said and time.monotonic() - handle.created > WAIT_NOTE_S:
                        handle.waiting_said = True
                        self.log(f"{handle.name}: waiting for a Ray node with {self.num_gpus} free "
                                 f"GPU(s){'' if self.num_gpus else ' and 1 free CPU'} (`ray status` "
                                 "shows the cluster's resources)")
                    return
                placement = ray.get(handle.start_ref)
                handle.start_ref = None
                if placement is None:
                    return self._end(handle, "the run never started on its node")
                self._placed(handle, placement)
            if handle.pull_ref is None:
                if time.monotonic() - handle.last_pull >= PULL_S:
                    request = ray_stream.request_for(handle.run_dir, ray_stream.read_sync(handle.run_dir))
                    handle.pull_ref = handle.actor.pull.remote(request)
                    handle.last_pull = time.monotonic()
                return
            if not ray.wait([handle.pull_ref], timeout=0)[0]:
                return
            result = ray.get(handle.pull_ref)
            handle.pull_ref = None
        except ray.exceptions.ActorUnavailableError:  # a transient network problem: try again
            handle.pull_ref = None
            return
        except ray.exceptions.RayActorError as exc:
            return self._end(handle, self._why_dead(handle, exc))
        except ray.exceptions.RayTaskError as exc:  # raised inside the actor (seeding, a bad spawn)
            return self._end(handle, f"could not run on its node: {exc.cause!r}")
        record = ray_stream.read_sync(handle.run_dir)
        if result["ops"]:
            ray_stream.apply(handle.run_dir, result["ops"], record)
            ray_stream.write_sync(handle.run_dir, record)
        if result["complete"]:
            info = read_exit(handle.run_dir, handle.attempt)
            self._end(handle, "" if info else "the run ended on its node without an exit record",
                      info)
        elif result["ops"]:
            handle.last_pull = 0.0  # more may be waiting: ask again at once

    def _placed(self, handle: RayHandle, placement: dict) -> None:
        handle.placement = placement
        old = read_json(handle.run_dir / PLACEMENT_JSON) or {}
        if old.get("attempt") != handle.attempt:  # a fresh attempt: the head's record starts over
            ray_stream.write_sync(handle.run_dir, {**placement["sync"], "attempt": handle.attempt})
        atomic_write_json(handle.run_dir / PLACEMENT_JSON, {
            "attempt": handle.attempt, "actor": actor_name(self.campaign, handle.name, handle.attempt),
            **{k: v for k, v in placement.items() if k != "sync"}})
        handle.pid = None  # the wrapper's pid is on another machine: never signal it from here
        self.log(f"{handle.name}: attempt {handle.attempt} runs on {placement['hostname']} "
                 f"(node {placement['node_id'][:12]}, GPU {placement['cuda_visible_devices'] or '-'})")

    def _end(self, handle: RayHandle, reason: str, info: ExitInfo | None = None) -> None:
        handle.info = info or ExitInfo(None, None, now(), False, reason)
        handle.pull_ref = handle.start_ref = None
        try:  # frees its GPUs: a detached actor stays otherwise
            self._ray.kill(handle.actor, no_restart=True)
        except Exception as exc:  # noqa: BLE001 - usually: already gone with its node
            self.log(f"{handle.name}: could not remove its Ray actor: {exc}")

    def _actor_class(self):
        if self._actor_cls is None:
            self._actor_cls = self._ray.remote(RunActor)
        return self._actor_cls

    def _node_alive(self, node_id: str) -> bool:
        return any(n.get("NodeID") == node_id and n.get("Alive") for n in self._ray.nodes())

    def _why_dead(self, handle: RayHandle, exc: Exception) -> str:
        node = handle.placement.get("node_id") or (read_json(handle.run_dir / PLACEMENT_JSON) or {}).get("node_id")
        if node and not self._node_alive(node):
            host = handle.placement.get("hostname") or "?"
            return f"{NODE_LOST}: {host} (node {node[:12]}) left the Ray cluster"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"the run's Ray actor died: {first}"


class RayKillJob:
    """`proctree.KillJob`'s counterpart: the kill runs on the run's node, then the last files
    come back. `tick()` never blocks; True once the run is over and copied."""

    def __init__(self, launcher: RayLauncher, handle: RayHandle | None, grace_s: float) -> None:
        self.launcher, self.handle, self.grace_s = launcher, handle, grace_s
        self.kill_ref = None
        self.done = False

    def tick(self) -> bool:
        handle = self.handle
        if handle is None or handle.info is not None:
            self.done = True
            return True
        ray = self.launcher._ray
        if handle.start_ref is not None and not ray.wait([handle.start_ref], timeout=0)[0]:
            # Not on a node yet (waiting for resources): nothing runs, dropping the actor is enough.
            self.launcher._end(handle, "killed before it started on a node")
            self.done = True
            return True
        if self.kill_ref is None and handle.start_ref is None:
            self.kill_ref = handle.actor.kill_tree.remote(self.grace_s)
        self.launcher.sync_step(handle)
        self.done = handle.info is not None
        return self.done


def ray_unavailable_reason(settings=None) -> str | None:
    """The registry's launch check for `launcher = "ray"` (`settings`: the [campaign] table):
    Ray importable here and its cluster reachable, so no campaign starts that cannot run."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed on this machine (pip install 'retrain-tui[ray]')"
    try:
        check_reachable(getattr(settings, "ray_address", "") or os.environ.get("RAY_ADDRESS") or "auto")
    except RayUnavailable as exc:
        return str(exc)
    return None


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raise RayUnavailable unless the cluster's GCS port answers (ray.init would hang)."""
    import socket

    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:  # a private helper of Ray: without it "auto" is left to ray.init
        if address == "auto":
            return
    resolved = address
    if address == "auto":
        try:
            resolved = get_ray_address_from_environment("auto", None)
        except Exception:  # noqa: BLE001 - its "no cluster found" errors vary by version
            resolved = None
        if not resolved or resolved == "auto":
            raise RayUnavailable("no Ray cluster found on this machine: start one with "
                                 "`ray start --head` (or `ray start --address=HEAD:6379` to join "
                                 "one), or set [campaign] ray_address / RAY_ADDRESS")
    host, _, port = resolved.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {resolved!r} "
                             f"([campaign] ray_address / RAY_ADDRESS): {exc}") from None
