"""The supervisor's watch over its running runs, once a second: stalls (stalls.py), rules
(rules.py) and notifications (retrain_core.notify) of runs failing, stalling, finishing and
of the campaign ending. The daemon calls `tick()` from its loop and `campaign_ended()` once.

Events also go to each run's history, `runs/<name>/events.jsonl`: one JSON object per line,
`{"time", "event": "stalled" | "stall_cleared" | "rule_fired" | …, ...details}`.
"""

from __future__ import annotations

import json
import time

import psutil

from retrain_core.notify import Notifier
from retrain_core.throttle import read_holders

from .files import RUN_ID_ENV, RUNS, THROTTLE
from .rules import load_rules, record_firing, rules_to_fire
from .stalls import ProgressReader, check_stall, floor_seconds

CHECK_S = 1.0
MAX_STALL_RESTARTS = 3  # on_stall = "restart": then it is only flagged
END_EVENTS = {"succeeded": "run_succeeded", "failed": "run_failed", "killed": "run_killed"}


class RunWatch:
    def __init__(self, sup) -> None:
        self.sup = sup
        manifest = sup.manifest
        self.on_stall = manifest.get("on_stall", "flag")
        self.rules = load_rules(manifest.get("rules", []), sup.log)
        self.floor_s = floor_seconds()
        self.progress = ProgressReader()
        self.notifier = Notifier((manifest.get("notify") or {}).get("webhook", ""),
                                 manifest.get("campaign", sup.root.name), log=sup.log)
        # Runs already ended when this supervisor starts (a resume) are not news.
        self.seen = {name: r.get("status") for name, r in sup.state["runs"].items()}
        self._next = 0.0

    def history(self, run: str, event: str, **details) -> None:
        try:
            with open(self.sup.root / RUNS / run / "events.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"time": time.time(), "event": event, **details}) + "\n")
        except OSError as exc:
            self.sup.log(f"{run}: could not write its history: {exc}")

    def tick(self) -> bool:
        """Returns whether state changed (the daemon then writes state.json)."""
        if time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + CHECK_S
        changed = self._notice_endings()
        now = time.time()
        for name in list(self.sup.handles):
            if name in self.sup.kills:
                continue
            r = self.sup.run_state(name)
            progress = self.progress.read(name, self.sup.run_dir(name))
            changed |= self._check_stall(name, r, progress, now)
            if progress.last is not None and self.rules and name not in self.sup.kills:
                row = {**progress.last, "attempt": r.get("attempt", 0),
                       "elapsed_s": now - (r.get("launched_at") or now)}
                for rule in rules_to_fire(self.rules, row, r):
                    self._fire(name, r, rule, row, now)
                    changed = True
        return changed

    def _notice_endings(self) -> bool:
        changed = False
        for name, r in self.sup.state["runs"].items():
            status = r.get("status")
            if status == self.seen.get(name):
                continue
            self.seen[name] = status
            if status != "running" and r.pop("stalled", None) is not None:
                self.history(name, "stall_cleared", reason=f"the run ended ({status})")
                changed = True
            if status in END_EVENTS:
                error = (r.get("error") or "").strip().splitlines()
                self.notifier.send(END_EVENTS[status], name, error[-1] if error else status,
                                   status=status, exit_code=r.get("exit_code"))
        return changed

    def _check_stall(self, name: str, r: dict, progress, now: float) -> bool:
        stall = check_stall(self.sup.run_dir(name), progress, r.get("launched_at") or now, now,
                            self.floor_s)
        if stall is not None and self._queued(name):
            stall = None  # waiting its turn for a throttle slot is not a hang
        was = r.get("stalled")
        if stall is None:
            if was:
                r.pop("stalled")
                self.history(name, "stall_cleared")
                self.sup.log(f"{name}: progressing again")
                return True
            return False
        r["stalled"] = stall
        if was:
            return False  # still stalled: idle_s is refreshed with the next write
        message = (f"no new metrics for {stall['idle_s']:.0f} s (bound {stall['bound_s']:.0f} s = "
                   f"max({self.floor_s:.0f} s, 5 × median step))")
        self.sup.log(f"{name}: stalled: {message}")
        self.history(name, "stalled", **stall)
        restarts = r.get("stall_restarts", 0)
        restart = self.on_stall == "restart" and restarts < MAX_STALL_RESTARTS
        self.notifier.send("run_stalled", name, message, action="restart" if restart else "flag",
                           **stall)
        if restart:
            r["stall_restarts"] = restarts + 1
            self.history(name, "restarted_on_stall", restarts=restarts + 1)
            self.sup.log(f"{name}: restarting it (on_stall = restart, {restarts + 1}/"
                         f"{MAX_STALL_RESTARTS})")
            self.sup.start_kill(name, "restart")
        return True

    def _queued(self, name: str) -> bool:
        """Whether the run waits for a throttle slot: every slot is held, none by it."""
        limit = int(self.sup.manifest.get("max_concurrent") or 0)
        if not self.sup.manifest.get("throttle") or limit <= 0:
            return False
        holders = read_holders(self.sup.root / THROTTLE)
        mine = any(self._holder_is(h, name) for h in holders)
        return not mine and len(holders) >= limit

    def _holder_is(self, holder: dict, name: str) -> bool:
        """By the run marker in the holder's environment (identity records may cut long
        run names), else by name."""
        try:
            marker = psutil.Process(int(holder.get("pid"))).environ().get(RUN_ID_ENV)
        except (psutil.Error, OSError, TypeError, ValueError):
            marker = None
        if marker:
            return marker == self.sup.spec(name).run_id
        return holder.get("run") == name

    def _fire(self, name: str, r: dict, rule, row: dict, now: float) -> None:
        entry = record_firing(rule, r, row, now)
        what = f"{rule.label}: {rule.when} (step {row.get('step')})"
        self.sup.log(f"{name}: {what} -> {rule.action}")
        if rule.action == "kill":
            r["error"] = f"killed by {what}"
            self.sup.start_kill(name, "killed")
        elif rule.action == "pause":
            self.sup.state["supervisor"].update(paused=True, pause_reason=f"{what} on {name}")
        self.history(name, "rule_fired", **entry)
        self.notifier.send("rule_fired", name, what, action=rule.action, rule=entry)

    def campaign_ended(self) -> None:
        """The campaign is over (not merely this supervisor leaving): say so, and give the
        webhook a bounded moment to receive the last events."""
        self._notice_endings()
        counts: dict[str, int] = {}
        for r in self.sup.state["runs"].values():
            counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        self.notifier.send("campaign_finished", None, summary, counts=counts)
        self.notifier.flush(10.0)
