"""Cross-process counting semaphore for accelerator-heavy phases.

`max_concurrent` slots are `filelock` lock files `slot_0.lock … slot_{k-1}.lock` in one
directory: an exclusive `flock` on each, exactly what `filelock.FileLock` takes, so any
`FileLock("…/slot_0.lock")` and this throttle exclude each other. The flock calls are made
directly because a `FileLock` acquire+release adds enough Python per hand-over to cost
slot utilisation at short holds (docs/BENCHMARKS.md, "Throttle"). The kernel releases a
flock the moment its holder dies, so a killed holder's slot is free at once.

Waiting, without queueing behind one slot and without a busy loop:
- every acquirer first takes `queue.lock` with a *blocking* `flock` (the kernel parks it;
  Linux chains conflicting flock waiters first-come first-served, so nobody starves; only a
  newcomer arriving in the instant between two heads can overtake, which bench/throttle.py
  shows as a rare longer wait);
- the queue holder (the "head") tries every slot without blocking and takes the first
  free one, then hands the queue on at once, so the next head is already parked on the
  FIFO by the time another slot frees;
- if none is free the head sleeps in `poll` on the FIFO `wake.fifo`; a releaser writes the
  freed slot's index there right after unlocking, so the head wakes within microseconds and
  tries that slot first. A holder that is killed writes nothing: the head also re-checks
  every `FALLBACK_POLL_S` (and the supervisor pokes the FIFO after it kills a run).

Only one process polls at a time and only on a timeout, so waiting costs no CPU.
Holder identity lives in `slot_<i>.json` (slot, pid, run, since), written right after
acquiring and readable without locking (a space-padded record rewritten in place; blank =
free); an identity whose slot lock is free is stale (its holder died) and ignored.

Each process opens the throttle's files once (first acquire) and keeps them: a hand-over is
then a handful of syscalls. The descriptors are close-on-exec, and a forked child drops
its copies at once (`os.register_at_fork`), so a child never keeps a parent's lock alive.
Rule for users: never fork while holding a slot.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import stat
import time
import weakref
from pathlib import Path
from typing import Self

FALLBACK_POLL_S = 0.025  # how soon a waiter notices a slot freed by a killed holder
RECORD_BYTES = 512  # fixed size of a slot identity record
BLANK_RECORD = b" " * RECORD_BYTES
_CONTENDED = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
_LIVE: weakref.WeakSet[Throttle] = weakref.WeakSet()


class NullThrottle:
    """No throttle: entering never waits."""

    last_wait_s: float = 0.0
    slot: int | None = None

    def acquire(self) -> Self:
        self.last_wait_s = 0.0
        return self

    def release(self) -> None:
        return None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        return None


def wake_waiters(directory: str | os.PathLike, slot: int = 0) -> None:
    """Nudge a waiting head to re-check the slots (after `slot` was freed)."""
    try:
        fd = os.open(Path(directory) / "wake.fifo", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody is waiting; ENOENT: no throttle here
        return
    try:
        os.write(fd, bytes([slot % 256]))
    except OSError:  # EAGAIN: pipe full, the head has plenty of wake-ups queued already
        pass
    finally:
        os.close(fd)


class Throttle:
    """`with Throttle(dir, k, run):` holds one of k slots; `last_wait_s` = time waited."""

    def __init__(self, directory: str | os.PathLike, max_concurrent: int, run: str = "") -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.directory = Path(directory)
        self.max_concurrent = k = int(max_concurrent)
        self.run = run
        self.last_wait_s = 0.0
        self.slot: int | None = None
        self._fifo = self.directory / "wake.fifo"
        self._make_directory()
        self._lock_paths = [self.directory / f"slot_{i}.lock" for i in range(k)]
        self._record_paths = [self.directory / f"slot_{i}.json" for i in range(k)]
        # Slot i first, then the others: the order a head tries after slot i was announced.
        self._orders = [[i] + [j for j in range(k) if j != i] for i in range(k)]
        self._wake_bytes = [bytes([i % 256]) for i in range(k)]
        self._pid: int | None = None  # process that opened the descriptors below
        self._queue_fd = self._fifo_fd = -1
        self._slot_fds: list[int] = []
        self._record_fds: list[int] = []
        self._record_heads: list[bytes] = []
        self._poller: select.poll | None = None
        _LIVE.add(self)

    # -- descriptors, opened once per process ----------------------------------------------
    def _make_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self._fifo.exists():
            try:
                os.mkfifo(self._fifo, 0o600)
            except FileExistsError:
                pass

    def _open_files(self) -> None:
        self._close_files()
        self._make_directory()
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            self._queue_fd = os.open(self.directory / "queue.lock", flags, 0o600)
            # O_RDWR: we count as a writer too, so poll never sees EOF (and spins).
            self._fifo_fd = os.open(self._fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            for path in self._lock_paths:
                self._slot_fds.append(os.open(path, flags, 0o600))
            for path in self._record_paths:
                self._record_fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except BaseException:
            self._close_files()
            raise
        self._poller = select.poll()
        self._poller.register(self._fifo_fd, select.POLLIN)
        pid = os.getpid()
        # The record minus "since": formatted once, so taking a slot costs one `%` and a pwrite.
        run = self.run
        while True:  # a run name too long for the record is cut, keeping the record valid JSON
            heads = [(json.dumps({"slot": i, "pid": pid, "run": run})[:-1] + ', "since": ').encode()
                     for i in range(self.max_concurrent)]
            if max(len(h) for h in heads) <= RECORD_BYTES - 32 or not run:
                break
            run = run[:len(run) // 2]
        self._record_heads = heads
        self._pid = pid

    def _close_files(self) -> None:
        for fd in (self._queue_fd, self._fifo_fd, *self._slot_fds, *self._record_fds):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._queue_fd = self._fifo_fd = -1
        self._slot_fds, self._record_fds, self._poller = [], [], None
        self._pid = None

    def _forget_after_fork(self) -> None:
        # The child shares the parent's open file descriptions (and so their flocks): drop
        # them without unlocking, and reopen on the child's own first acquire.
        self._close_files()
        self.slot = None

    def close(self) -> None:
        """Release any held slot and close this process's descriptors."""
        self.release()
        self._close_files()

    def __del__(self) -> None:
        # At interpreter shutdown `os` may be gone: the process exit closes them anyway.
        with contextlib.suppress(AttributeError, TypeError):
            if getattr(self, "_pid", None) == os.getpid():
                self._close_files()

    # -- acquiring ---------------------------------------------------------------------
    def _try_slots(self, first: int = 0) -> bool:
        fds = self._slot_fds
        for i in self._orders[first]:
            try:
                fcntl.flock(fds[i], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in _CONTENDED:
                    continue
                raise
            if os.fstat(fds[i]).st_nlink == 0:  # the file was unlinked under us: reopen it
                fcntl.flock(fds[i], fcntl.LOCK_UN)
                os.close(fds[i])
                fds[i] = os.open(self._lock_paths[i], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                return self._try_slots(i)
            self.slot = i
            return True
        return False

    def acquire(self) -> Throttle:
        if self.slot is not None:
            raise RuntimeError("this Throttle already holds a slot")
        start = time.monotonic()
        if self._pid != os.getpid():
            self._open_files()
        try:
            queue_fd = self._queue_fd
            fcntl.flock(queue_fd, fcntl.LOCK_EX)  # kernel-blocking: parked, no CPU
            if os.fstat(queue_fd).st_nlink == 0:  # the directory was cleared: start afresh
                fcntl.flock(queue_fd, fcntl.LOCK_UN)
                self._open_files()
                queue_fd = self._queue_fd
                fcntl.flock(queue_fd, fcntl.LOCK_EX)
            try:
                if not self._try_slots():
                    self._wait_as_head()
            finally:
                # Hand the queue on before anything else, so that the next waiter becomes
                # head and parks on the FIFO while we still hold the slot.
                fcntl.flock(queue_fd, fcntl.LOCK_UN)
            slot = self.slot
            now = time.time()
            os.pwrite(self._record_fds[slot],
                      (self._record_heads[slot] + b"%.6f}" % now).ljust(RECORD_BYTES), 0)
        except BaseException:
            self._abandon()
            raise
        self.last_wait_s = time.monotonic() - start
        return self

    def _abandon(self) -> None:
        """After an interrupt anywhere in `acquire` (Ctrl-C, a trainer's stop signal whose
        handler raises): keep nothing. It may have landed between a flock and the
        bookkeeping after it, so every lock this process could hold is unlocked; unlocking
        a lock one does not hold is a no-op, and these descriptors are this process's own."""
        held = self.slot
        for fd in (self._queue_fd, *self._slot_fds):
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        self.slot = None
        with contextlib.suppress(OSError, IndexError, TypeError):
            if held is not None:
                os.pwrite(self._record_fds[held], BLANK_RECORD, 0)
            os.write(self._fifo_fd, self._wake_bytes[held or 0])  # a waiter may take it now

    def _wait_as_head(self) -> None:
        fifo_fd, poll = self._fifo_fd, self._poller.poll
        timeout_ms = round(FALLBACK_POLL_S * 1000)
        _drain(fifo_fd)  # stale wake-ups from releases nobody waited for
        first = 0
        # Every release after the drain writes a byte, so a slot freed after a failed
        # try always wakes us: no lost wake-up.
        while not self._try_slots(first):
            if poll(timeout_ms):
                data = _drain(fifo_fd)
                # Each wake byte is the index of a slot just freed: try the latest first.
                first = data[-1] % self.max_concurrent if data else 0
            else:
                first = 0

    def release(self) -> None:
        slot = self.slot
        if slot is None or self._pid != os.getpid():
            return
        os.pwrite(self._record_fds[slot], BLANK_RECORD, 0)
        fcntl.flock(self._slot_fds[slot], fcntl.LOCK_UN)
        self.slot = None
        try:
            os.write(self._fifo_fd, self._wake_bytes[slot])
        except OSError:  # EAGAIN: pipe full, the head has plenty of wake-ups queued already
            pass

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- observing (no locking needed) ---------------------------------------------------
    def holders(self) -> list[dict]:
        return read_holders(self.directory)


def _drain(fifo_fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fifo_fd, 4096)
        except BlockingIOError:
            return data
        data += chunk
        if len(chunk) < 4096:
            return data


def _forget_all_after_fork() -> None:
    for throttle in list(_LIVE):
        throttle._forget_after_fork()


os.register_at_fork(after_in_child=_forget_all_after_fork)


def _read_record(path: Path) -> dict | None:
    for _ in range(3):
        try:
            text = path.read_bytes().strip()
        except OSError:
            return None
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            continue  # caught a write half-way: read again
    return None


def read_holders(directory: str | os.PathLike) -> list[dict]:
    """Current slot holders `[{slot, pid, run, since}]`, read without taking any lock.

    An identity file is trusted only while its slot lock is held: a free lock means the
    holder died without cleaning up, so the file is stale.
    """
    directory = Path(directory)
    holders = []
    for path in sorted(directory.glob("slot_*.json")):
        info = _read_record(path)
        if not info:
            continue
        if _lock_is_free(directory / f"slot_{info.get('slot')}.lock"):
            continue
        holders.append(info)
    return holders


def _lock_is_free(lock_path: str | Path, wake: bool = True) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_NONBLOCK)
    except FileNotFoundError:
        return True
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _CONTENDED:
                return False
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if wake:  # the probe held the lock for an instant: let a waiting head re-check
        wake_waiters(Path(lock_path).parent, int(Path(lock_path).stem.split("_")[-1]))
    return True


def open_throttle(directory: str | None, max_concurrent: int, run: str = ""):
    """The throttle a run uses: `NullThrottle` when `directory` is unset (None or "") or
    `max_concurrent` <= 0."""
    if not directory or max_concurrent <= 0:
        return NullThrottle()
    return Throttle(directory, max_concurrent, run)
