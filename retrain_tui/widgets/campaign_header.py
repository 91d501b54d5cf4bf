"""The campaign header: supervisor liveness, elapsed, ETA, pause/circuit breaker, squeeze."""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import Static

from retrain_tui.stats import format_duration


def header_text(snap, now: float) -> Text:
    counts: dict[str, int] = {}
    for row in snap.runs:
        counts[row.status] = counts.get(row.status, 0) + 1
    sup = snap.supervisor
    line1 = Text(snap.campaign, style="bold")
    unfinished = any(row.status in ("pending", "running") for row in snap.runs)
    if snap.alive:
        line1 += Text("  ● supervisor alive", style="green")
    elif unfinished:
        line1 += Text("  ○ supervisor gone (read-only)", style="yellow")
    else:
        line1 += Text("  ✓ finished", style="bold green")  # the word `retrain status` uses
    if sup.get("paused"):
        reason = sup.get("pause_reason") or "paused"
        style = "bold red" if "circuit" in reason.lower() else "bold yellow"
        line1 += Text(f"  ⏸ {reason}", style=style)
    if sup.get("stopping"):
        line1 += Text("  stopping", style="bold red")
    start = snap.start_time
    # Without a supervisor nothing moves: elapsed stops at its last heartbeat (when it
    # ended), instead of growing for as long as someone looks at a finished campaign.
    end = now if snap.alive else sup.get("heartbeat")
    end = end if isinstance(end, (int, float)) and end > 0 else now
    elapsed = end - start if isinstance(start, (int, float)) and start > 0 else math.nan
    line2 = Text(f"elapsed {format_duration(elapsed)}  ETA {format_duration(snap.eta_s)}  ")
    line2 += Text("  ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    squeeze = snap.squeeze.get("status") or "none"
    if snap.squeeze_analysis:
        squeeze = f"rank {snap.squeeze_analysis.get('recommended_rank')} recommended"
    line2 += Text(f"  squeeze: {squeeze}", style="red" if squeeze == "failed" else "")
    return line1 + Text("\n") + line2


class CampaignHeader(Static):
    def show(self, snap, now: float) -> None:
        self.update(header_text(snap, now))
