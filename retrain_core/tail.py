"""Incremental JSONL reader shared by the TUI and `retrain status`.

`JsonlTail(path).read_new()` returns the JSON objects of the lines completed since the last
call. It keeps the file open and a byte offset, buffers a partial last line until its
newline arrives, and never re-reads what it has already read:
- rotation (the path now names another inode): the rest of the old file is drained, then
  the new file is read from its start;
- truncation (the file shrank below the offset): the file is read again from its start
  (the old content is gone; what is there now is new);
- malformed lines (not JSON, or JSON that is not an object) are counted in `malformed`;
- non-finite numbers (`NaN`, `Infinity`, `1e999`, as Python's json writes them) are read
  as None: a metrics line with a diverged loss is still a line, and nothing downstream
  has to guard against inf/nan arithmetic or print invalid JSON.
A missing file is simply empty until it appears.
"""

from __future__ import annotations

import gc
import json
import math
import os
from pathlib import Path
from typing import Self

try:  # faster than the stdlib parser on metrics lines (docs/BENCHMARKS.md); optional
    import orjson

    _loads = orjson.loads
    _JSONError: tuple = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None
    _loads = json.loads
    _JSONError = (ValueError,)

CHUNK = 1 << 20


def _finite_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _float_sized_int(text: str) -> int | None:
    value = int(text)
    return value if abs(value) < 2 ** 1023 else None  # beyond it, float(value) overflows


def _lenient_loads(line: bytes):
    """The stdlib parser with NaN/Infinity/overflowing numbers mapped to None."""
    return json.loads(line, parse_float=_finite_float, parse_int=_float_sized_int,
                      parse_constant=lambda _: None)


def _loads_line(line: bytes):
    """One line: the fast parser, else the lenient one (raises ValueError if not JSON)."""
    try:
        return _loads(line)
    except _JSONError:
        return _lenient_loads(line)


class JsonlTail:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.malformed = 0
        self.lines_read = 0
        self._fd: int | None = None
        self._ino: int | None = None
        self._offset = 0
        self._partial = b""
        self._opened_before = False
        # Set by read_new when the file was replaced or truncated (a resumed trainer rewrites
        # metrics.jsonl up to its checkpoint): the index in its result where the new
        # content starts. A reader keeping history drops it there and rebuilds from the rest.
        self.restart_index: int | None = None

    # -- public ---------------------------------------------------------------------
    def read_new(self) -> list[dict]:
        out: list[dict] = []
        self.restart_index = None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if self._fd is not None and (st is None or st.st_ino != self._ino):
            # Rotated or removed: whatever was appended to the old file before the switch
            # still belongs to us.
            self._drain(out, os.fstat(self._fd).st_size)
            self._close()
        if st is None:
            return out
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return out
            st = os.fstat(self._fd)
            self._ino, self._offset, self._partial = st.st_ino, 0, b""
            if self._opened_before:
                self.restart_index = len(out)
            self._opened_before = True
        if st.st_size < self._offset:  # truncated in place
            self._offset, self._partial = 0, b""
            self.restart_index = len(out)
        if st.st_size > self._offset:
            self._drain(out, st.st_size)
        return out

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def __del__(self) -> None:
        self._close()

    # -- internals ------------------------------------------------------------------
    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._ino = None

    def _drain(self, out: list[dict], size: int) -> None:
        # Parsing allocates one dict per line and nothing cyclic: pausing the cyclic GC
        # during a large batch makes opening a long file noticeably faster.
        paused = gc.isenabled() and size - self._offset > CHUNK
        if paused:
            gc.disable()
        try:
            self._drain_chunks(out, size)
        finally:
            if paused:
                gc.enable()

    def _drain_chunks(self, out: list[dict], size: int) -> None:
        while self._offset < size:
            data = os.pread(self._fd, min(CHUNK, size - self._offset), self._offset)
            if not data:
                break
            self._offset += len(data)
            self._parse(out, data)

    def _parse(self, out: list[dict], data: bytes) -> None:
        buf = self._partial + data if self._partial else data
        last_newline = buf.rfind(b"\n")
        if last_newline < 0:
            self._partial = buf
            return
        self._partial = buf[last_newline + 1:]
        lines = buf[:last_newline].split(b"\n")
        if orjson is not None:
            # Fast path: the whole batch in one comprehension; any problem line sends the
            # batch through the careful per-line loop below, which counts it.
            try:
                parsed = [_loads(line) for line in lines if line]
            except _JSONError:
                parsed = None
        else:
            # Without orjson one json.loads over the whole batch is faster than one call per
            # line.
            body = [line for line in lines if line.strip()]
            try:
                parsed = _lenient_loads(b"[" + b",".join(body) + b"]")
                if len(parsed) != len(body):
                    parsed = None
            except ValueError:
                parsed = None
        if parsed is not None and all(type(obj) is dict for obj in parsed):
            out.extend(parsed)
            self.lines_read += len(parsed)
            return
        for line in lines:
            if not line or line.isspace():
                continue
            try:
                obj = _loads_line(line)
            except ValueError:
                self.malformed += 1
                continue
            if type(obj) is dict:
                out.append(obj)
                self.lines_read += 1
            else:
                self.malformed += 1


def read_end(path: str | os.PathLike, max_bytes: int) -> tuple[bytes, bool]:
    """The last `max_bytes` of a file and whether the window starts mid-file (b"" if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = max(0, f.tell() - max_bytes)
            f.seek(start)
            return f.read(), start > 0
    except OSError:
        return b"", False


def tail_lines(path: str | os.PathLike, lines: int = 40, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `lines` lines of a (log) file, reading at most `max_bytes` from its end."""
    data, cut = read_end(path, max_bytes)
    text = data.decode("utf-8", errors="replace").splitlines()
    if cut and text:
        text = text[1:]  # the window's first line is cut
    return text[-lines:]


def read_last_record(path: str | os.PathLike, max_bytes: int = 65536) -> dict | None:
    """The last complete JSON object line of a file, reading only its end (for `status`)."""
    records = read_last_records(path, 1, max_bytes)
    return records[0] if records else None


def read_last_records(path: str | os.PathLike, count: int, max_bytes: int = 1 << 20) -> list[dict]:
    """Up to `count` last complete JSON object lines, oldest first, reading only the end."""
    data, _ = read_end(path, max_bytes)
    out: list[dict] = []
    for line in reversed(data.split(b"\n")):
        if len(out) >= count:
            break
        if not line.strip():
            continue
        try:
            obj = _loads_line(line)
        except ValueError:
            continue  # a partial last line, or a line cut at the window's start
        if isinstance(obj, dict):
            out.append(obj)
    return out[::-1]
