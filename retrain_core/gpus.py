"""The GPU pool of a campaign and each run's share of it (`[backend] devices`, `gpus_per_run`).

`devices` names the pool: `"auto"` (or `"cuda"`) = every GPU NVML reports (none when
`nvidia-ml-py` cannot reach a driver), `"cpu"` / `"mps"` = no GPUs, `"cuda:N"` or
`"cuda:0,1,…"` = exactly those indices, trusted as given (no NVML call, so a list works on
any box). The supervisor hands each run `gpus_per_run` GPUs of the pool that no live run
holds, through `CUDA_VISIBLE_DEVICES`; a run that finds too few free GPUs waits. With no
GPUs in the pool placement is off and only `max_workers` limits parallelism.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable

GPU_LIST = re.compile(r"cuda:(\d+(?:\s*,\s*\d+)*)")
NO_GPU_ENV = ""  # CUDA_VISIBLE_DEVICES for a run that must not touch a GPU


def detect_gpus() -> list[int]:
    """Indices of the GPUs NVML reports; [] without nvidia-ml-py, a driver or a GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, …
        return []
    try:
        return list(range(pynvml.nvmlDeviceGetCount()))
    except Exception:  # noqa: BLE001
        return []
    finally:
        with contextlib.suppress(Exception):  # a failed shutdown changes nothing we report
            pynvml.nvmlShutdown()


def explicit_gpus(devices: str) -> list[int] | None:
    """The indices of a `cuda:0,1,…` spec (duplicates dropped), None for any other spec."""
    match = GPU_LIST.fullmatch(devices.strip())
    if not match:
        return None
    return list(dict.fromkeys(int(x) for x in match.group(1).split(",")))


def resolve_pool(devices: str) -> list[int]:
    """The GPU indices `devices` names on this machine (see the module docstring)."""
    listed = explicit_gpus(devices)
    if listed is not None:
        return listed
    if devices.strip() in ("", "auto", "cuda"):
        return detect_gpus()
    return []  # cpu, mps


def pool_problem(devices: str, gpus_per_run: int, pool: list[int] | None = None) -> str:
    """Why no run could ever start with this pool ("" when fine)."""
    pool = resolve_pool(devices) if pool is None else pool
    if devices.strip() == "cuda" and not pool:
        return '[backend] devices = "cuda" but NVML finds no GPU on this machine'
    if pool and gpus_per_run > len(pool):
        return (f"[campaign] gpus_per_run = {gpus_per_run} but the pool [backend] devices = "
                f"{devices!r} has only {len(pool)} GPU(s): no run could ever start")
    return ""


def slots(pool: list[int], gpus_per_run: int) -> int | None:
    """How many runs the pool holds at once; None when placement is off (no GPUs)."""
    if not pool:
        return None
    return len(pool) // max(1, gpus_per_run)


def pick(pool: list[int], busy: Iterable[int], gpus_per_run: int) -> list[int] | None:
    """`gpus_per_run` free GPUs in pool order, [] when placement is off, None when too few."""
    if not pool:
        return []
    taken = set(busy)
    free = [g for g in pool if g not in taken]
    if len(free) < gpus_per_run:
        return None
    return free[:max(1, gpus_per_run)]


def visible_devices(gpus: list[int]) -> str:
    """The CUDA_VISIBLE_DEVICES value for a run's share."""
    return ",".join(str(g) for g in gpus)
