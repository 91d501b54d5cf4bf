"""Throttle interface (placeholder until the real filelock semaphore lands).

`open_throttle(directory, max_concurrent, run)` returns an object usable as
`with throttle: ...`; after entering, `throttle.last_wait_s` holds the seconds spent
waiting for a slot. With an empty directory it is a no-op.
"""

from __future__ import annotations


class NullThrottle:
    last_wait_s: float = 0.0

    def __enter__(self) -> "NullThrottle":
        self.last_wait_s = 0.0
        return self

    def __exit__(self, *exc) -> None:
        return None


def open_throttle(directory: str, max_concurrent: int, run: str = ""):
    return NullThrottle()
