"""Monitor under load: 64 runs, each appending 20 metric lines/s, for 20 s.

The app runs in its own process on a pseudo-terminal (100×30, the real Linux driver, so
rendering and writing escape codes are paid for); the parent drains the terminal, runs the
writer process and samples the app's CPU time with psutil. Inside the app a probe records:
- update latency: a snapshot built by the watcher thread → the frame showing it refreshed
  (queueing + applying to the widgets + compositing), per snapshot;
- event-loop lag: how late a 20 ms timer fires (what a keypress waits for).
The peer is the same app attached to the same campaign with the writer idle.

usage: .venv/bin/python bench/tui.py [--runs 64] [--rate 20] [--seconds 20]
targets: update-latency p99 < 100 ms, CPU < 25% of one core while loaded.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- the app process --------------------------------------------------------------------------
def run_app(directory: Path, out: Path, seconds: float) -> None:
    from retrain_tui.app import RetrainApp

    class ProbedApp(RetrainApp):
        def on_ready(self) -> None:
            self.lags: list[float] = []
            self._expected = time.monotonic() + 0.02
            self.set_interval(0.02, self._probe)
            self.set_timer(seconds, self._finish)
            self.set_timer(1.0, self._reset)  # the parent starts measuring 1 s after ready
            (out.parent / "ready").write_text("1")

        def _reset(self) -> None:
            self.lags.clear()
            for screen in self.screen_stack:
                if hasattr(screen, "update_latencies"):
                    screen.update_latencies.clear()

        def _probe(self) -> None:
            now = time.monotonic()
            self.lags.append(max(0.0, now - self._expected))
            self._expected = now + 0.02

        def _finish(self) -> None:
            from retrain_tui.screens.monitor import MonitorScreen

            monitor = next(s for s in self.screen_stack if isinstance(s, MonitorScreen))
            out.write_text(json.dumps({
                "update_latency_s": getattr(monitor, "update_latencies", []),
                "loop_lag_s": self.lags,
                "snapshots": monitor.snapshot.version if monitor.snapshot else 0,
                "rows": len(monitor.snapshot.runs) if monitor.snapshot else 0,
                "steps": sum(r.step for r in monitor.snapshot.runs) if monitor.snapshot else 0,
            }))
            self.exit()

    app = ProbedApp(directory, poll_interval=0.5)
    app.run()
    if getattr(app, "fatal_error", ""):
        print(app.fatal_error, file=sys.stderr)
        (out.parent / "fatal").write_text(app.fatal_error)


# -- the writer process -----------------------------------------------------------------------
def run_writer(directory: Path, runs: list[tuple[str, str, int]], rate: float,
               seconds: float) -> None:
    from tests.support.campaigns import metric_line

    files = {name: open(directory / "runs" / name / "metrics.jsonl", "a")  # noqa: SIM115
             for name, _, _ in runs}
    period, step = 1.0 / rate, 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        for name, condition, seed in runs:
            files[name].write(json.dumps(metric_line(name, condition, seed, step)) + "\n")
            files[name].flush()
        step += 1
        time.sleep(max(0.0, start + step * period - time.monotonic()))
    for fh in files.values():
        fh.close()
    print(json.dumps({"lines": step * len(runs), "seconds": time.monotonic() - start}))


# -- orchestration ----------------------------------------------------------------------------
def drive(directory: Path, runs, rate: float, seconds: float, write: bool, work: Path) -> dict:
    """Start the app on a pty, optionally the writer, and measure."""
    out = work / f"app_{'load' if write else 'idle'}.json"
    (work / "ready").unlink(missing_ok=True)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100", LINES="30")
    app = subprocess.Popen([sys.executable, __file__, "--role", "app", "--dir", str(directory),
                            "--out", str(out), "--seconds", str(seconds + 1)],
                           stdin=slave, stdout=slave, stderr=slave, env=env,
                           start_new_session=True)
    os.close(slave)
    drained, tail = 0, b""

    def drain(until: float) -> None:
        nonlocal drained, tail
        while time.monotonic() < until:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:
                    return
                drained += len(data)
                tail = (tail + data)[-8192:]

    deadline = time.monotonic() + 60
    while not (work / "ready").exists() and time.monotonic() < deadline:
        drain(time.monotonic() + 0.1)
    drain(time.monotonic() + 1.0)  # let the first snapshot land
    proc = psutil.Process(app.pid)
    cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    writer = None
    if write:
        writer = subprocess.Popen([sys.executable, __file__, "--role", "writer", "--dir",
                                   str(directory), "--rate", str(rate), "--seconds",
                                   str(seconds), "--runs", str(len(runs))],
                                  stdout=subprocess.PIPE, text=True)
    drain(t0 + seconds)
    cpu1, t1 = sum(proc.cpu_times()[:2]), time.monotonic()
    writer_info = json.loads(writer.communicate()[0]) if writer else {}
    while app.poll() is None and time.monotonic() < t1 + 30:
        drain(time.monotonic() + 0.2)
    os.close(master)
    if not out.exists():
        raise SystemExit("the app wrote no stats; its terminal ended with:\n"
                         + tail.decode(errors="replace"))
    stats = json.loads(out.read_text())
    stats.update(cpu_share=(cpu1 - cpu0) / (t1 - t0), terminal_bytes=drained, **writer_info)
    return stats


def make_runs(n: int) -> tuple[list[str], list[int]]:
    conditions = [f"c{i}+none" for i in range(8)]
    seeds = list(range(max(1, n // len(conditions))))
    return conditions, seeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--rate", type=float, default=20.0, help="lines per second per run")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--role", default="bench", choices=("bench", "app", "writer"))
    parser.add_argument("--dir")
    parser.add_argument("--out")
    args = parser.parse_args()
    conditions, seeds = make_runs(args.runs)
    runs = [(f"{c}_s{s}", c, s) for c in conditions for s in seeds][:args.runs]
    if args.role == "app":
        run_app(Path(args.dir), Path(args.out), args.seconds)
        return 0
    if args.role == "writer":
        run_writer(Path(args.dir), runs, args.rate, args.seconds)
        return 0

    from tests.support.campaigns import make_campaign, mark_supervisor_alive

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        directory = make_campaign(work, conditions=conditions, seeds=seeds, max_steps=10**6,
                                  statuses={name: "running" for name, _, _ in runs})
        mark_supervisor_alive(directory)  # this process stands in: a live campaign, no dialog
        idle = drive(directory, runs, args.rate, min(args.seconds, 10.0), False, work)
        load = drive(directory, runs, args.rate, args.seconds, True, work)
    print(f"monitor: {len(runs)} runs × {args.rate:g} lines/s for {args.seconds:g} s "
          f"({load.get('lines', 0)} lines written, {load['steps']} steps shown at the end)")
    for name, st in (("idle (peer)", idle), ("loaded", load)):
        lat = [x * 1000 for x in st["update_latency_s"]]
        lag = [x * 1000 for x in st["loop_lag_s"]]
        print(f"  {name:12s} update latency p50 {percentile(lat, 50):6.1f} ms  p99 "
              f"{percentile(lat, 99):6.1f} ms  (n={len(lat)})   loop lag p50 "
              f"{percentile(lag, 50):5.1f} ms  p99 {percentile(lag, 99):6.1f} ms   CPU "
              f"{st['cpu_share'] * 100:5.1f}% of one core")
    lat = [x * 1000 for x in load["update_latency_s"]]
    ok_lat = percentile(lat, 99) < 100
    ok_cpu = load["cpu_share"] < 0.25
    ratio = load["cpu_share"] / idle["cpu_share"] if idle["cpu_share"] > 0 else float("inf")
    print(f"  loaded/idle CPU ratio {ratio:.2f}x;  median update latency "
          f"{statistics.median(lat) if lat else float('nan'):.1f} ms")
    print(f"  targets: p99 < 100 ms {'PASS' if ok_lat else 'FAIL'};  CPU < 25% "
          f"{'PASS' if ok_cpu else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
