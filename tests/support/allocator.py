"""Allocator warm-up for short-lived benchmark processes (bench/advantages.py)."""

from __future__ import annotations


def warm_allocator(megabytes: int = 24) -> None:
    """Allocate and free one large block so glibc stops returning memory to the OS per call.

    glibc serves big requests with mmap and, when such a block (≤ 32 MB) is freed, raises
    its mmap threshold to that size and its trim threshold to twice it. Until that has
    happened once, every multi-MB temporary of the pipeline and the planning detector is
    fresh memory (≈1000–1800 page faults, several ms per call on a small CPU process).
    A trainer that has handled tensors of this size is already in the warm state; a
    short-lived process (a benchmark, a script) can call this once at start. Harmless
    elsewhere (other allocators simply allocate and free the block).
    """
    import numpy as np

    block = np.empty(megabytes << 20, dtype=np.uint8)
    del block
