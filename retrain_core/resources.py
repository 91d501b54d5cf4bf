"""What a campaign's runs use: host CPU and memory per run (psutil, over the run's whole
process tree) and, where NVML answers, per-GPU utilisation and memory plus each run's GPU
memory (NVML's process lists, matched by pid). Without NVML the figures are host-only and
`Resources.gpu_note` says why. Read by the TUI's resources panel and `retrain export`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    util_pct: float | None
    mem_used_mb: float
    mem_total_mb: float


@dataclass(frozen=True)
class RunUsage:
    run: str
    pids: int              # processes in the run's tree
    rss_mb: float
    cpu_pct: float         # 100 = one core busy
    gpu_mem_mb: float | None  # None: no NVML figures


@dataclass(frozen=True)
class Resources:
    cpu_pct: float
    mem_used_mb: float
    mem_total_mb: float
    cpu_count: int
    gpus: list[GpuInfo] = field(default_factory=list)
    gpu_note: str = ""     # why there are no GPU figures ("" when NVML answered)
    runs: list[RunUsage] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"host": {"cpu_pct": self.cpu_pct, "mem_used_mb": self.mem_used_mb,
                         "mem_total_mb": self.mem_total_mb, "cpu_count": self.cpu_count},
                "gpus": [g.__dict__ for g in self.gpus], "gpu_note": self.gpu_note,
                "runs": [r.__dict__ for r in self.runs]}


class Nvml:
    """NVML, initialised once; `note` says why it is unavailable."""

    def __init__(self) -> None:
        self.lib = None
        self.note = ""
        try:
            import pynvml
        except ImportError:
            self.note = "no GPU figures: nvidia-ml-py is not installed (pip install 'retrain-tui[gpu]')"
            return
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, …
            self.note = f"no GPU figures: NVML cannot start ({exc}); no NVIDIA driver here?"
            return
        self.lib = pynvml

    def sample(self) -> tuple[list[GpuInfo], dict[int, float]]:
        """Per-GPU figures and {pid: GPU memory MB} over all GPUs."""
        nv, gpus, by_pid = self.lib, [], {}
        if nv is None:
            return gpus, by_pid
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception as exc:  # noqa: BLE001
            self.note = f"no GPU figures: NVML failed ({exc})"
            return gpus, by_pid
        if count == 0:
            self.note = "no GPU figures: NVML reports no GPU on this machine"
        for i in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                name = nv.nvmlDeviceGetName(handle)
                mem = nv.nvmlDeviceGetMemoryInfo(handle)
                try:
                    util = float(nv.nvmlDeviceGetUtilizationRates(handle).gpu)
                except Exception:  # noqa: BLE001 - not supported on some (MIG) devices
                    util = None
                gpus.append(GpuInfo(i, name.decode() if isinstance(name, bytes) else str(name), util,
                                    mem.used / MB, mem.total / MB))
                for getter in ("nvmlDeviceGetComputeRunningProcesses",
                               "nvmlDeviceGetGraphicsRunningProcesses"):
                    try:
                        for p in getattr(nv, getter)(handle):
                            used = getattr(p, "usedGpuMemory", None)
                            if isinstance(used, int):
                                by_pid[p.pid] = by_pid.get(p.pid, 0.0) + used / MB
                    except Exception:  # noqa: BLE001, S110 - per-process figures need permissions
                        pass
            except Exception:  # noqa: BLE001, S112 - one bad device must not hide the others
                continue
        return gpus, by_pid


class ResourceSampler:
    """Keeps psutil.Process objects between samples, so CPU % is measured over the interval."""

    def __init__(self, nvml: Nvml | None = None) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self._nvml = nvml
        psutil.cpu_percent(None)  # starts the host CPU interval

    @property
    def nvml(self) -> Nvml:
        if self._nvml is None:
            self._nvml = Nvml()
        return self._nvml

    def _proc(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None or not proc.is_running():  # is_running also catches pid reuse
            proc = self._procs[pid] = psutil.Process(pid)
            proc.cpu_percent(None)  # first call starts its interval
        return proc

    def _tree(self, pid: int, start_time: float | None) -> list[psutil.Process]:
        try:
            root = self._proc(pid)
            if start_time is not None and abs(root.create_time() - start_time) > 0.01:
                return []  # the pid was reused: not our run
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self, runs: dict[str, tuple[int, float | None]]) -> Resources:
        """`runs`: {name: (wrapper pid, its start time)} of the running runs."""
        gpus, gpu_by_pid = self.nvml.sample()
        usages = []
        for name, (pid, start) in runs.items():
            rss = cpu = 0.0
            tree = self._tree(pid, start)
            gpu = 0.0
            for proc in tree:
                try:
                    rss += proc.memory_info().rss / MB
                    cpu += self._proc(proc.pid).cpu_percent(None)
                except psutil.Error:
                    continue
                gpu += gpu_by_pid.get(proc.pid, 0.0)
            usages.append(RunUsage(name, len(tree), rss, cpu, gpu if gpus else None))
        vm = psutil.virtual_memory()
        return Resources(psutil.cpu_percent(None), (vm.total - vm.available) / MB, vm.total / MB,
                         psutil.cpu_count() or 1, gpus, self.nvml.note if not gpus else "", usages)


def running_runs(state: dict) -> dict[str, tuple[int, float | None]]:
    """{name: (pid, start time)} of state.json's running runs that have a pid."""
    return {name: (r["pid"], r.get("proc_start_time"))
            for name, r in (state.get("runs") or {}).items()
            if r.get("status") == "running" and isinstance(r.get("pid"), int)}
