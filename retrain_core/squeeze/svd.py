"""Singular values of every LoRA product `B·A` without forming `B·A`.

`Aᵀ = Q_A R_A` and `B = Q_B R_B` (Householder QR, R only), then `B·A = Q_B (R_B R_Aᵀ) Q_Aᵀ`
has the singular values of the small r×r core `R_B R_Aᵀ`. Modules are grouped by shape and
the core SVDs of a group run as one batched call. On a GPU the weights of a group are
stacked in chunks and factorised by one batched QR per chunk; the stack is laid out so
that each matrix is already column-major (`A` as stored is `Aᵀ` column-major; `B` is
transposed while it is copied in). On the CPU each module is factorised straight from the
memory-mapped file (see `_cores_streamed`). Only the R factors are formed (mode="r"):
the Q factors are never needed for the singular values. Everything runs in float64: a
float32 QR moves V(k) by ~3e-8, enough to flip a recommendation at the threshold
(singular values 2√2 and √2 retain exactly 0.8 at rank 1; float32 said 0.79999997).
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

from .adapter import AdapterWeights, LoraModule, SqueezeError

# Stacked float64 weights per chunk; bounds peak memory for adapters of any size.
DEFAULT_CHUNK_BYTES = 256 * 1024 * 1024


def resolve_device(device: str) -> torch.device:
    if device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise SqueezeError(f"[squeeze].device: {device!r} is not a torch device ({exc})") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SqueezeError(f"[squeeze].device: {device!r} requested but CUDA is not available")
    return resolved


def matrix_a(tensor: torch.Tensor) -> torch.Tensor:
    """lora_A as the 2-D (r, in) matrix (conv weights are flattened)."""
    return tensor.reshape(tensor.shape[0], -1)


def matrix_b(tensor: torch.Tensor) -> torch.Tensor:
    """lora_B as the 2-D (out, r) matrix."""
    return tensor.reshape(tensor.shape[0], -1)


def core_factors(a_t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The (batched) core `R_B R_Aᵀ` in float64 from column-major `Aᵀ` and `B` stacks."""
    r_a = torch.linalg.qr(a_t.double(), mode="r").R  # (..., min(in, r), r)
    r_b = torch.linalg.qr(b.double(), mode="r").R  # (..., min(out, r), r)
    return r_b @ r_a.mT


def _chunks(modules: list[LoraModule], chunk_bytes: int) -> list[list[LoraModule]]:
    (r, n_in), (n_out, _) = modules[0].matrix_shapes
    per_module = 8 * r * (n_in + n_out)
    size = max(1, chunk_bytes // per_module)
    return [modules[i:i + size] for i in range(0, len(modules), size)]


@contextmanager
def _single_threaded_ops():
    """torch ops on one thread each for the duration (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _core_of(pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    a, b = matrix_a(pair[0]).double(), matrix_b(pair[1]).double()
    return core_factors(a.mT, b)


def _cores_streamed(weights: AdapterWeights, modules: list[LoraModule]) -> list[torch.Tensor]:
    """Cores of every module, each factorised straight from the memory-mapped file.

    On the CPU a batched `torch.linalg.qr` is a loop of LAPACK calls over a copied stack,
    so stacking only adds a pass over the weights; here LAPACK's own column-major copy is
    the single copy. The modules are spread over `torch.get_num_threads()` workers, each
    running its LAPACK calls on one thread: 504 small multi-threaded QRs pay a thread
    barrier each, which on a shared, oversubscribed CPU stalls for whole scheduler time
    slices (several times slower on 2 busy cores: bench/squeeze.py, docs/BENCHMARKS.md).
    """
    # Mapped views, fetched here so the file handle is only touched by this thread.
    pairs = [(weights.get(m.key_a), weights.get(m.key_b)) for m in modules]
    workers = min(torch.get_num_threads(), len(modules))
    if workers <= 1:
        return [_core_of(pair) for pair in pairs]
    with _single_threaded_ops(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(_core_of, pairs))


def _cores_stacked(weights: AdapterWeights, group: list[LoraModule], dev: torch.device,
                   chunk_bytes: int) -> torch.Tensor:
    """Cores of one shape group from stacked chunks moved to `dev` (one batched QR each)."""
    (r, n_in), (n_out, _) = group[0].matrix_shapes
    pin = dev.type == "cuda"
    cores = []
    for chunk in _chunks(group, chunk_bytes):
        n = len(chunk)
        # Row-major (n, r, in) is column-major Aᵀ; (n, r, out) filled with Bᵀ is
        # column-major B. The `.mT` views hand LAPACK / cuSOLVER their native layout.
        a_stack = torch.empty((n, r, n_in), dtype=torch.float64, pin_memory=pin)
        b_stack = torch.empty((n, r, n_out), dtype=torch.float64, pin_memory=pin)
        for slot, module in enumerate(chunk):
            a_stack[slot].copy_(matrix_a(weights.get(module.key_a)))
            b_stack[slot].copy_(matrix_b(weights.get(module.key_b)).mT)
        a_stack = a_stack.to(dev, non_blocking=True)
        b_stack = b_stack.to(dev, non_blocking=True)
        cores.append(core_factors(a_stack.mT, b_stack.mT))
    return torch.cat(cores)


def singular_values(weights: AdapterWeights, modules: list[LoraModule], device: str = "cpu",
                    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                    strategy: str = "auto") -> list[torch.Tensor]:
    """Descending float64 singular values of `B·A` per module (CPU tensors, input order).

    strategy: "stacked" (batched QR over stacked chunks on the device), "streamed"
    (per-module QR from the mapped file), or "auto" (streamed on CPU, stacked elsewhere).
    The r×r core SVDs are always batched per shape group.
    """
    dev = resolve_device(device)
    if strategy == "auto":
        strategy = "streamed" if dev.type == "cpu" else "stacked"
    if strategy not in ("stacked", "streamed"):
        raise SqueezeError(f"unknown squeeze strategy {strategy!r}")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, module in enumerate(modules):
        groups[module.matrix_shapes].append(index)
    if strategy == "streamed" and dev.type == "cpu":
        every_core = _cores_streamed(weights, modules)
        cores_by_group = [torch.stack([every_core[i] for i in indices]) for indices in groups.values()]
    else:
        cores_by_group = [_cores_stacked(weights, [modules[i] for i in indices], dev, chunk_bytes)
                          for indices in groups.values()]
    result: list[torch.Tensor | None] = [None] * len(modules)
    for indices, cores in zip(groups.values(), cores_by_group, strict=True):
        values = torch.linalg.svdvals(cores).cpu()
        for slot, index in enumerate(indices):
            result[index] = values[slot]
    return result  # type: ignore[return-value]
