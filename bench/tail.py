"""Tail benchmark: JsonlTail against a naive reader that re-reads whole files.

1. 64 metrics files appended at 50 lines/s each for 10 s by a writer process; the reader
   polls every file every 50 ms. Prints reader CPU time per appended line and the latency
   from write to the reader seeing the line (p50/p99), for JsonlTail and for the naive
   peer (open + read everything + json.loads per line, keeping lines it has not seen).
2. Opening a 200,000-line metrics file: time to the first complete read (target < 1 s),
   JsonlTail vs the naive per-line reader.

    nice -n 10 .venv/bin/python bench/tail.py [--files 64 --rate 50 --seconds 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrain_core.tail import JsonlTail

FIELDS = ["loss", "mean_reward", "correct_rate", "running_correct_rate", "sepa_lambda",
          "num_datums", "skipped_groups", "max_token_hit_rate", "mean_completion_tokens",
          "step_time_s", "sample_time_s", "train_time_s", "throttle_wait_s",
          "tokens_per_second", "lr", "grad_norm", "exec_surprisal_mean", "exec_surprisal_var",
          "plan_surprisal_mean", "plan_surprisal_var", "planning_token_fraction",
          "peak_memory_mb"]


def metrics_line(step: int) -> bytes:
    rec = {"step": step, "run": "maxrl+gtpo_sepa_s42", "condition": "maxrl+gtpo_sepa",
           "seed": 42, **{k: 0.123456789 * (step % 7 + 1) for k in FIELDS},
           "sepa_gate_open": True, "batch_size": 8, "group_size": 16, "time": time.time()}
    return (json.dumps(rec) + "\n").encode()


def writer(paths: list[str], rate: float, seconds: float, t0: float) -> None:
    fds = [os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT) for p in paths]
    period = 1.0 / rate
    step = 0
    while time.time() < t0:
        time.sleep(0.001)
    while True:
        due = t0 + step * period
        if due >= t0 + seconds:
            break
        time.sleep(max(0.0, due - time.time()))
        for i, fd in enumerate(fds):
            # Offset the files inside the period so the writes are spread like real runs.
            line = metrics_line(step)
            os.write(fd, line)
        step += 1


class NaiveReader:
    def __init__(self, path: str) -> None:
        self.path, self.seen = path, 0

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                lines = f.read().split(b"\n")[:-1]
        except FileNotFoundError:
            return []
        new = [json.loads(line) for line in lines[self.seen:]]
        self.seen = len(lines)
        return new


def follow(kind: str, files: int, rate: float, seconds: float, poll: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        paths = [os.path.join(d, f"m{i}.jsonl") for i in range(files)]
        t0 = time.time() + 0.3
        w = mp.get_context("fork").Process(target=writer, args=(paths, rate, seconds, t0))
        w.start()
        readers = [JsonlTail(p) if kind == "JsonlTail" else NaiveReader(p) for p in paths]
        latencies, lines, cpu = [], 0, 0.0
        while w.is_alive() or time.time() < t0 + seconds + 2 * poll:
            c = time.process_time()
            batch = [rec for r in readers for rec in r.read_new()]
            now = time.time()
            cpu += time.process_time() - c
            latencies.extend(now - rec["time"] for rec in batch)
            lines += len(batch)
            time.sleep(poll)
            if not w.is_alive() and time.time() > t0 + seconds + 2 * poll:
                break
        w.join()
        expected = files * int(rate * seconds)
    latencies.sort()
    return {"lines": lines, "expected": expected, "cpu_us_per_line": cpu / max(lines, 1) * 1e6,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}


def open_big(kind: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big.jsonl")
        with open(path, "wb") as f:
            f.write(b"".join(metrics_line(i) for i in range(n)))
        s = time.perf_counter()
        reader = JsonlTail(path) if kind == "JsonlTail" else NaiveReader(path)
        got = reader.read_new()
        elapsed = time.perf_counter() - s
        assert len(got) == n, (kind, len(got))
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--poll", type=float, default=0.05)
    ap.add_argument("--big", type=int, default=200_000)
    a = ap.parse_args()
    print(f"{a.files} files x {a.rate:g} lines/s for {a.seconds:g} s, polling every "
          f"{a.poll * 1000:g} ms")
    res = {}
    for kind in ("JsonlTail", "naive-reread"):
        r = res[kind] = follow(kind, a.files, a.rate, a.seconds, a.poll)
        print(f"{kind:13s} lines {r['lines']}/{r['expected']}  reader CPU "
              f"{r['cpu_us_per_line']:.1f} us/line  latency p50 {r['p50_ms']:.1f} ms  "
              f"p99 {r['p99_ms']:.1f} ms")
    print(f"ratio CPU/line naive/JsonlTail: "
          f"{res['naive-reread']['cpu_us_per_line'] / res['JsonlTail']['cpu_us_per_line']:.1f}x")
    big = {kind: statistics.median(open_big(kind, a.big) for _ in range(3))
           for kind in ("JsonlTail", "naive-reread")}
    print(f"open {a.big} lines: JsonlTail {big['JsonlTail']:.3f} s, naive per-line "
          f"{big['naive-reread']:.3f} s (ratio {big['naive-reread'] / big['JsonlTail']:.2f}x)")


if __name__ == "__main__":
    main()
