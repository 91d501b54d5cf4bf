"""Resource figures (retrain_core.resources) on real processes, and the resources panel
(snapshots at 80×24 with and without GPU figures)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from waits import wait_until

from retrain_core.resources import GpuInfo, Nvml, Resources, ResourceSampler, RunUsage, running_runs
from retrain_tui.app import RetrainApp
from retrain_tui.screens.resources import ResourcesScreen
from tests.support.campaigns import FIXED_TIME, make_campaign

# A parent that holds ~150 MB and a child that spins one core: a run's process tree.
TREE = r"""
import subprocess, sys, time
block = bytearray(150 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.fixture
def tree():
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    yield proc, child
    for pid in (child, proc.pid):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    proc.wait(30)


def test_run_usage_covers_the_process_tree(tree) -> None:
    proc, _ = tree
    start = psutil.Process(proc.pid).create_time()
    sampler = ResourceSampler(nvml=Nvml())
    sampler.sample({"r": (proc.pid, start)})  # starts the CPU interval
    def busy():
        time.sleep(0.5)
        usage = sampler.sample({"r": (proc.pid, start)}).runs[0]
        return usage if usage.cpu_pct > 20 else None
    usage = wait_until(busy, 30, what="the spinning child to show CPU use")
    assert usage.pids == 2 and usage.rss_mb >= 150
    res = sampler.sample({"r": (proc.pid, start), "reused": (proc.pid, start - 100)})
    assert res.runs[1].pids == 0 and res.runs[1].rss_mb == 0  # start time differs: not ours
    assert res.mem_total_mb > res.mem_used_mb > 0 and res.cpu_count >= 1


def test_without_nvml_the_note_says_why() -> None:
    nvml = Nvml()
    if nvml.lib is not None:
        pytest.skip("NVML works on this machine")
    res = ResourceSampler(nvml=nvml).sample({})
    assert res.gpus == [] and res.gpu_note.startswith("no GPU figures: ")
    assert "nvidia-ml-py is not installed" in res.gpu_note or "NVML cannot start" in res.gpu_note


def test_running_runs_reads_state() -> None:
    state = {"runs": {"a": {"status": "running", "pid": 5, "proc_start_time": 1.0},
                      "b": {"status": "succeeded", "pid": 6}, "c": {"status": "running", "pid": None}}}
    assert running_runs(state) == {"a": (5, 1.0)}


WITH_GPUS = Resources(
    cpu_pct=37.0, mem_used_mb=41_234, mem_total_mb=131_072, cpu_count=16,
    gpus=[GpuInfo(0, "NVIDIA H200", 93.0, 61_440, 143_771), GpuInfo(1, "NVIDIA H200", None, 512, 143_771)],
    runs=[RunUsage("maxrl+gtpo_sepa_s42", 3, 5_321, 101.0, 58_000),
          RunUsage("grpo+none_s101", 2, 4_100, 99.0, 0.0)])
HOST_ONLY = Resources(
    cpu_pct=88.0, mem_used_mb=9_000, mem_total_mb=24_000, cpu_count=2,
    gpu_note="no GPU figures: nvidia-ml-py is not installed (pip install 'retrain-tui[gpu]')",
    runs=[RunUsage("grpo+none_s42", 2, 812, 97.0, None)])


class Fixed:
    """A sampler that returns prepared figures: the snapshot must not show this box's load."""

    def __init__(self, res: Resources):
        self.res = res

    def sample(self, runs):
        return self.res


@pytest.fixture
def campaign(tmp_path: Path, monkeypatch) -> Path:
    directory = make_campaign(tmp_path / "logs", seeds=(42,))
    monkeypatch.chdir(tmp_path)
    return directory.relative_to(tmp_path)


def shoot(res: Resources):
    async def run_before(pilot) -> None:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        pilot.app.push_screen(ResourcesScreen(pilot.app.screen.directory, sampler=Fixed(res)))
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
    return run_before


def app_for(target) -> RetrainApp:
    return RetrainApp(target, logs_dir=Path("logs"), clock=lambda: FIXED_TIME,
                      start_watchers=False, strict=True)


def test_resources_with_gpus_80x24(campaign, snap_compare) -> None:
    assert snap_compare(app_for(campaign), terminal_size=(80, 24), run_before=shoot(WITH_GPUS))


def test_resources_host_only_80x24(campaign, snap_compare) -> None:
    assert snap_compare(app_for(campaign), terminal_size=(80, 24), run_before=shoot(HOST_ONLY))


async def test_G_opens_the_panel_with_real_figures(campaign) -> None:
    app = app_for(campaign)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("G")
        await pilot.pause()
        assert isinstance(app.screen, ResourcesScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        res = app.screen.query_one("#resources-panel").resources
        assert res is not None and res.mem_total_mb > 0 and res.runs == []
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ResourcesScreen)
