"""The resources panel: host CPU and memory, per-GPU utilisation and memory (NVML), and per
running run its processes, resident memory, CPU and GPU memory. Without NVML it shows the
host figures and one line saying why there are no GPU figures."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from retrain_core.resources import Resources


def fmt_mb(mb: float | None) -> str:
    if mb is None:
        return "-"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def resources_renderable(res: Resources | None):
    if res is None:
        return Text("sampling…", style="dim")
    host = Text.assemble(("host ", "bold"), f"CPU {res.cpu_pct:.0f}% of {res.cpu_count} cores · "
                         f"RAM {fmt_mb(res.mem_used_mb)} / {fmt_mb(res.mem_total_mb)}")
    parts = [host]
    if res.gpus:
        gpus = Table(box=None, pad_edge=False, show_edge=False, expand=False)
        for col, justify in (("GPU", "left"), ("util", "right"), ("memory", "right")):
            gpus.add_column(col, justify=justify, header_style="bold")
        for g in res.gpus:
            util = "-" if g.util_pct is None else f"{g.util_pct:.0f}%"
            gpus.add_row(f"{g.index} {g.name}", util,
                         f"{fmt_mb(g.mem_used_mb)} / {fmt_mb(g.mem_total_mb)}")
        parts.append(gpus)
    else:
        parts.append(Text(res.gpu_note or "no GPU figures", style="yellow"))
    runs = Table(box=None, pad_edge=False, show_edge=False, expand=False)
    for col, justify in (("run", "left"), ("procs", "right"), ("RSS", "right"), ("CPU", "right"),
                         ("GPU mem", "right")):
        runs.add_column(col, justify=justify, header_style="bold")
    for r in res.runs:
        runs.add_row(r.run, str(r.pids), fmt_mb(r.rss_mb), f"{r.cpu_pct:.0f}%", fmt_mb(r.gpu_mem_mb))
    parts.append(Text(""))
    parts.append(runs if res.runs else Text("no running run", style="dim"))
    return Group(*parts)


class ResourcesPanel(Static):
    DEFAULT_CSS = """
    ResourcesPanel { height: auto; padding: 0 1; }
    """

    def show(self, res: Resources | None) -> None:
        self.resources = res
        self.update(resources_renderable(res))
