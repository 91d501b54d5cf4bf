"""What float64 costs LoRA-Squeeze: QR(mode="r") time float64 / float32 on Qwen3-4B rank-128 shapes.

    nice -n 10 .venv/bin/python bench/squeeze_qr_dtype.py

The squeeze analysis factorises in float64 since #12 (float32 moved V(k) by ~3e-8, enough
to flip a recommendation at the threshold). The two dtypes are timed interleaved, one
thread, so load from other processes hits both alike; the ratio is what matters.
"""
from __future__ import annotations

import statistics
import time

import torch

torch.set_num_threads(1)
torch.manual_seed(0)
shapes = [(2560, 128), (9728, 128), (1024, 128)]  # Qwen3-4B in/out sizes at rank 128
mats = [torch.randn(n, r) for n, r in shapes]
ratios = []
for rep in range(7):
    t = {}
    for dtype in (torch.float32, torch.float64):
        ms = [m.to(dtype) for m in mats]
        start = time.perf_counter()
        for m in ms:
            torch.linalg.qr(m, mode="r")
        t[dtype] = time.perf_counter() - start
    ratios.append(t[torch.float64] / t[torch.float32])
print(f"float64/float32 time of QR(mode='r') on {shapes}: median {statistics.median(ratios):.2f}x "
      f"(range {min(ratios):.2f}-{max(ratios):.2f}, 7 interleaved repeats)")
