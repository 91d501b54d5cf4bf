"""What deserves the user's attention between two monitor snapshots: a run stalling or
finishing, the campaign ending (run failures are announced by the monitor from
`Snapshot.new_failures`). The monitor shows each as a toast and rings the terminal bell.

The first snapshot only sets the baseline: opening a finished campaign is not news.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrain_tui.monitor_view import FINISHED, Snapshot


@dataclass(frozen=True)
class Alert:
    title: str
    message: str
    severity: str = "information"  # Textual notify severities: information, warning, error


class Alerts:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, bool]] | None = None
        self._ended = False

    def update(self, snap: Snapshot) -> list[Alert]:
        now = {r.name: (r.status, bool(r.stalled)) for r in snap.runs}
        ended = bool(snap.runs) and all(r.status in FINISHED for r in snap.runs)
        before, self._seen = self._seen, now
        if before is None:
            self._ended = ended
            return []
        alerts = []
        for row in snap.runs:
            status, stalled = now[row.name]
            was_status, was_stalled = before.get(row.name, ("pending", False))
            if stalled and not was_stalled:
                s = row.stalled
                alerts.append(Alert("Run stalled", f"{row.name}: no new metrics for "
                                    f"{s.get('idle_s', 0):.0f} s (bound {s.get('bound_s', 0):.0f} s)",
                                    "warning"))
            if status == "succeeded" and was_status != "succeeded":
                alerts.append(Alert("Run finished", f"{row.name} succeeded ({row.step} steps)"))
        if ended and not self._ended:
            counts: dict[str, int] = {}
            for r in snap.runs:
                counts[r.status] = counts.get(r.status, 0) + 1
            alerts.append(Alert("Campaign ended", f"{snap.campaign}: " + ", ".join(
                f"{n} {s}" for s, n in sorted(counts.items()))))
        self._ended = ended
        return alerts
