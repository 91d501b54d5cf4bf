"""Reusable scratch buffers for the pipeline's [N, T] temporaries.

On CPU every fresh multi-megabyte tensor is fresh memory from the OS (page faults, and
glibc hands it back when freed), which costs more than the arithmetic done in it. The
pipeline therefore writes its temporaries into per-thread buffers that persist between
calls and only grow; the tensors it returns (token advantages, uncertainty) are always
freshly allocated and never alias a buffer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

Scratch = Callable[[str, torch.Tensor], torch.Tensor]


def fresh(name: str, like: torch.Tensor) -> torch.Tensor:
    """The default `scratch`: a new uninitialised tensor shaped like `like`."""
    return torch.empty_like(like)


class Workspace:
    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised buffer shaped like `like`; the same memory on every call for `name`."""
        key = (name, like.dtype, like.device)
        numel = like.numel()
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[key] = buffer
        return buffer[:numel].view(like.shape)


_LOCAL = threading.local()


def thread_workspace() -> Workspace:
    """This thread's workspace (two threads never share a buffer)."""
    workspace = getattr(_LOCAL, "workspace", None)
    if workspace is None:
        workspace = _LOCAL.workspace = Workspace()
    return workspace


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
