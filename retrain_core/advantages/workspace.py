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
