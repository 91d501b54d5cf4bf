"""The filelock counting semaphore across real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrain_core.throttle import NullThrottle, Throttle, open_throttle, read_holders

# A holder takes a slot, prints "slot time waited", holds it, then prints "released".
# `hold` is seconds, or a file path: hold until that file exists (tests release on an
# event, not on a timer that a loaded machine would overrun). With a 5th argument it first
# prints "waiting" once its imports are done, so a test knows it is about to block.
HOLDER = r"""
import os, sys, time
from retrain_core.throttle import Throttle
d, k, run, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t = Throttle(d, k, run)
if len(sys.argv) > 5:
    print("waiting", flush=True)
with t:
    print(f"{t.slot} {time.time()} {t.last_wait_s}", flush=True)
    if hold.replace(".", "", 1).isdigit():
        time.sleep(float(hold))
    else:
        while not os.path.exists(hold):
            time.sleep(0.02)
print(f"released {time.time()}", flush=True)
"""

REPO = Path(__file__).resolve().parent.parent


def _holder(d, k, run, hold, announce=False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    extra = ["announce"] if announce else []
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(d), str(k), run, str(hold), *extra],
                            stdout=subprocess.PIPE, text=True, env=env)


@pytest.fixture
def kids():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()
        if p.stdout:
            p.stdout.close()


def test_null_throttle_and_factory(tmp_path):
    assert isinstance(open_throttle("", 4, "r"), NullThrottle)
    with open_throttle("", 4) as t:
        assert t.last_wait_s == 0.0
    t = open_throttle(str(tmp_path / "th"), 2, "r")
    assert isinstance(t, Throttle)
    with pytest.raises(ValueError):
        Throttle(tmp_path, 0)


def test_identity_visible_without_locking_and_cleared(tmp_path):
    t = Throttle(tmp_path, 2, "run-a")
    assert read_holders(tmp_path) == []
    with t:
        holders = t.holders()
        assert [(h["slot"], h["pid"], h["run"]) for h in holders] == [(0, os.getpid(), "run-a")]
        assert abs(holders[0]["since"] - time.time()) < 5
        with Throttle(tmp_path, 2, "run-b") as u:
            assert u.slot == 1  # a free slot is taken without waiting for run-a
            assert {h["run"] for h in read_holders(tmp_path)} == {"run-a", "run-b"}
    assert read_holders(tmp_path) == []


def test_killed_holder_frees_its_slot_at_once_and_stale_identity_is_ignored(tmp_path, kids):
    holder = _holder(tmp_path, 1, "victim", 60)
    kids.append(holder)
    slot = holder.stdout.readline().split()
    assert slot[0] == "0"
    assert [h["run"] for h in read_holders(tmp_path)] == ["victim"]
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_holders(tmp_path) == []  # its identity file is left behind, but stale
    t = Throttle(tmp_path, 1, "next")
    start = time.monotonic()
    with t:  # a leaked slot would block here until the test's timeout
        assert time.monotonic() - start < 30


def test_waiter_takes_the_first_slot_that_frees(tmp_path, kids):
    # Slots 0..2 are held; slot 1's holder leaves first: the waiter must get slot 1, not
    # queue behind slot 0.
    never, release_1 = tmp_path / "never", tmp_path / "release-1"
    for i in range(3):
        p = _holder(tmp_path / "th", 3, f"h{i}", release_1 if i == 1 else never)
        kids.append(p)
        assert p.stdout.readline().split()[0] == str(i)
    waiter = _holder(tmp_path / "th", 3, "waiter", 0, announce=True)
    kids.append(waiter)
    assert waiter.stdout.readline().strip() == "waiting"
    time.sleep(0.5)  # let it park (it would also be correct to get the slot later)
    release_1.touch()
    slot, _, waited = waiter.stdout.readline().split()
    assert slot == "1"
    assert float(waited) > 0  # it did wait: the slot was freed only after it asked


def test_never_more_than_k_holders_and_no_starvation(tmp_path, kids):
    k, n = 2, 6
    log = tmp_path / "holds.jsonl"
    script = r"""
import json, sys, time
from retrain_core.throttle import Throttle
t = Throttle(sys.argv[1], int(sys.argv[2]), sys.argv[3])
for _ in range(6):
    with t:
        s = time.time(); time.sleep(0.02); e = time.time()
    with open(sys.argv[4], "a") as f:
        f.write(json.dumps({"run": sys.argv[3], "start": s, "end": e, "wait": t.last_wait_s}) + "\n")
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for i in range(n):
        kids.append(subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "th"), str(k),
                                      f"r{i}", str(log)], env=env))
    for p in kids:
        assert p.wait(timeout=60) == 0
    holds = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(holds) == n * 6
    events = sorted([(h["start"], 1) for h in holds] + [(h["end"], -1) for h in holds])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    assert peak == k
    assert max(h["wait"] for h in holds) < 5.0


def test_waiting_burns_no_cpu(tmp_path, kids):
    import psutil

    release = tmp_path / "release"
    holder = _holder(tmp_path / "th", 1, "holder", release)
    kids.append(holder)
    holder.stdout.readline()
    waiter = _holder(tmp_path / "th", 1, "waiter", 0, announce=True)
    kids.append(waiter)
    proc = psutil.Process(waiter.pid)
    assert waiter.stdout.readline().strip() == "waiting"  # imports done: now it only waits
    time.sleep(0.3)
    before = sum(proc.cpu_times()[:2])
    time.sleep(2.0)
    spent = sum(proc.cpu_times()[:2]) - before
    # A busy wait would use most of a core (well over 0.5 s of 2 s even on a loaded box).
    assert waiter.poll() is None and spent < 0.25, spent
    release.touch()
    assert waiter.stdout.readline().split()[0] == "0"


def test_slots_are_filelock_locks(tmp_path):
    from filelock import FileLock, Timeout

    outside = FileLock(str(tmp_path / "slot_0.lock"), timeout=0, thread_local=False)
    outside.acquire()
    try:
        with Throttle(tmp_path, 2, "r") as t:
            assert t.slot == 1  # slot 0 is held through filelock by someone else
            with pytest.raises(Timeout):
                FileLock(str(tmp_path / "slot_1.lock"), timeout=0, thread_local=False).acquire()
    finally:
        outside.release()


FORKER = r"""
import os, sys, time
from retrain_core.throttle import Throttle
t = Throttle(sys.argv[1], 1, "parent")
with t:  # opens this process's descriptors
    pass
child = os.fork()
if child == 0:  # keeps every inherited descriptor it did not drop
    time.sleep(60)
    os._exit(0)
t.acquire()
print(child, flush=True)
time.sleep(60)
"""


def test_forked_child_does_not_keep_a_killed_parents_slot(tmp_path, kids):
    # The descriptors are opened once per process; a child forked after that must not
    # share them, or the parent's flock would outlive the parent.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen([sys.executable, "-c", FORKER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=env)
    kids.append(parent)
    child = int(parent.stdout.readline())
    try:
        assert [h["run"] for h in read_holders(tmp_path)] == ["parent"]
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        os.kill(child, 0)  # the child still runs
        from filelock import FileLock

        lock = FileLock(str(tmp_path / "slot_0.lock"), timeout=0.5, thread_local=False)
        lock.acquire()  # raises Timeout if the child kept the parent's lock alive
        lock.release()
    finally:
        os.kill(child, signal.SIGKILL)


def test_forked_child_reusing_the_throttle_excludes_its_parent(tmp_path):
    t = Throttle(tmp_path, 1, "shared")
    with t:
        pass
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the same object, its own lock once the parent holds the slot
        code = 1
        try:
            os.read(go_r, 1)
            with t:
                code = 0 if t.last_wait_s > 0.3 else 2
        finally:
            os._exit(code)
    with t:
        os.write(go_w, b"x")
        time.sleep(0.5)
    _, status = os.waitpid(pid, 0)
    os.close(go_r)
    os.close(go_w)
    assert os.waitstatus_to_exitcode(status) == 0  # 2: the child got the parent's slot


def test_waiting_head_notices_a_killed_holder_without_a_poke(tmp_path, kids):
    holder = _holder(tmp_path, 1, "victim", 60)
    kids.append(holder)
    holder.stdout.readline()
    waiter = _holder(tmp_path, 1, "waiter", 0, announce=True)
    kids.append(waiter)
    assert waiter.stdout.readline().strip() == "waiting"
    time.sleep(0.5)  # parked as head (earlier would also be fine: it then finds the slot free)
    killed_at = time.time()
    holder.send_signal(signal.SIGKILL)
    slot, got_at, _ = waiter.stdout.readline().split()
    assert slot == "0"
    # The 25 ms fallback poll, not a hang (a hang blocks readline until the test timeout).
    assert float(got_at) - killed_at < 15


def test_cached_descriptors_follow_a_recreated_directory(tmp_path):
    import shutil

    from filelock import FileLock, Timeout

    d = tmp_path / "th"
    t = Throttle(d, 1, "a")
    with t:  # opens (and keeps) this process's descriptors
        pass
    shutil.rmtree(d)  # e.g. a user cleaned the campaign's throttle/ directory
    with t:
        assert [h["run"] for h in read_holders(d)] == ["a"]
        with pytest.raises(Timeout):  # the slot held is the file now at the path
            FileLock(str(d / "slot_0.lock"), timeout=0, thread_local=False).acquire()
    assert read_holders(d) == []
