"""Throttle benchmark: the real semaphore against the naive "block on slot 0" design.

12 processes share 4 slots and loop acquire → hold 20 ms → release for 2 s. Prints, per
design (ours; naive = FileLock.acquire on slot 0 when all are busy; the same with a
kernel-blocking flock): slot utilisation (busy slot-seconds / slot-seconds available), p50/p99/max wait
(waits still open at the end count as censored), acquisitions per process (min = starvation
check) and the acquire overhead when a slot is free (single process, median of 500).

    nice -n 10 .venv/bin/python bench/throttle.py [--procs 12 --slots 4 --hold-ms 20 --seconds 2]
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from filelock import FileLock, Timeout

from retrain_core.throttle import Throttle


class NaiveThrottle:
    """Try every slot once; when all are busy, block on slot 0 (ignores the others).

    The wait on slot 0 is `FileLock.acquire()` (filelock polls every 50 ms by default):
    the design the issue measured.
    """

    kernel_wait = False

    def __init__(self, directory: str, k: int, run: str = "") -> None:
        self.locks = [FileLock(os.path.join(directory, f"naive_{i}.lock"), timeout=0,
                               thread_local=False, preserve_lock_file=True) for i in range(k)]
        self.directory, self.held, self.fd = directory, None, None

    def __enter__(self):
        for lock in self.locks:
            try:
                lock.acquire(blocking=False)
                self.held = lock
                return self
            except Timeout:
                continue
        if not self.kernel_wait:
            self.locks[0].acquire(timeout=-1)
            self.held = self.locks[0]
            return self
        self.fd = os.open(os.path.join(self.directory, "naive_0.lock"), os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # kernel-blocking wait on slot 0 only
        return self

    def __exit__(self, *exc):
        if self.held is not None:
            self.held.release()
            self.held = None
        else:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class NaiveKernelThrottle(NaiveThrottle):
    """The same, but parked in a blocking flock on slot 0 (woken by the kernel at once)."""

    kernel_wait = True


DESIGNS = {"throttle": Throttle, "naive-slot0": NaiveThrottle,
           "naive-slot0-flock": NaiveKernelThrottle}


def worker(design: str, directory: str, k: int, hold_s: float, t0: float, t_end: float, out):
    make = DESIGNS[design]
    throttle = make(directory, k, f"w{os.getpid()}")
    busy, waits, count = 0.0, [], 0
    # One sleep to the common start, not 1 ms polls: those left every slot idle for up to a
    # poll period at the start, counted against every design alike.
    time.sleep(max(0.0, t0 - time.time()))
    while True:
        t_req = time.time()
        if t_req >= t_end:
            break
        with throttle:
            t_got = time.time()
            if t_got >= t_end:
                waits.append((t_end - t_req, True))  # censored: still waiting when time was up
                break
            waits.append((t_got - t_req, False))
            count += 1
            time.sleep(hold_s)
            busy += min(time.time(), t_end) - t_got
    out.put((busy, waits, count))


def run_design(design: str, procs: int, k: int, hold_s: float, seconds: float) -> dict:
    ctx = mp.get_context("fork")  # nothing is held at fork time
    with tempfile.TemporaryDirectory() as d:
        if design.startswith("naive"):
            for i in range(k):
                Path(d, f"naive_{i}.lock").touch()
        else:
            Throttle(d, k)  # create the directory files up front
        out = ctx.Queue()
        t0 = time.time() + 0.5
        ps = [ctx.Process(target=worker, args=(design, d, k, hold_s, t0, t0 + seconds, out))
              for _ in range(procs)]
        for p in ps:
            p.start()
        results = [out.get() for _ in ps]
        for p in ps:
            p.join()
    busy = sum(r[0] for r in results)
    waits = sorted(w for r in results for w, _ in r[1])
    counts = [r[2] for r in results]

    def pct(q):
        return waits[min(len(waits) - 1, int(q * len(waits)))] * 1000

    return {"utilisation": busy / (k * seconds), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": waits[-1] * 1000, "min_acq": min(counts), "max_acq": max(counts),
            "overhead_ms": acquire_overhead(design, k)}


def acquire_overhead(design: str, k: int, n: int = 500) -> float:
    with tempfile.TemporaryDirectory() as d:
        if design.startswith("naive"):
            for i in range(k):
                Path(d, f"naive_{i}.lock").touch()
        t = DESIGNS[design](d, k, "overhead")
        times = []
        for _ in range(n):
            s = time.perf_counter()
            t.__enter__()
            times.append(time.perf_counter() - s)
            t.__exit__(None, None, None)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=12)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--hold-ms", type=float, default=20)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"{a.procs} processes, {a.slots} slots, {a.hold_ms:g} ms holds, {a.seconds:g} s; "
          f"median of {a.repeats} repeats")
    rows = {}
    for design in DESIGNS:
        reps = [run_design(design, a.procs, a.slots, a.hold_ms / 1000, a.seconds)
                for _ in range(a.repeats)]
        rows[design] = {key: statistics.median(r[key] for r in reps) for key in reps[0]}
        r = rows[design]
        print(f"{design:17s} utilisation {r['utilisation']:.3f}  wait p50 {r['p50_ms']:6.1f} ms  "
              f"p99 {r['p99_ms']:6.1f} ms  max {r['max_ms']:6.1f} ms  acquisitions/process "
              f"min {r['min_acq']:.0f} max {r['max_acq']:.0f}  free-slot acquire "
              f"{r['overhead_ms']:.3f} ms")
    t = rows["throttle"]
    for name in ("naive-slot0", "naive-slot0-flock"):
        n = rows[name]
        print(f"ratio throttle/{name}: utilisation {t['utilisation'] / n['utilisation']:.3f}x, "
              f"p99 wait {t['p99_ms'] / max(n['p99_ms'], 1e-9):.3f}x")


if __name__ == "__main__":
    main()
