"""LoRA-Squeeze analysis speed on a Qwen3-4B-shaped rank-128 adapter (~1 GB fp32).

    nice -n 10 .venv/bin/python bench/squeeze.py [--repeats 5] [--threads N]

Writes a synthetic adapter with Qwen3-4B shapes (36 layers × q,k,v,o,gate,up,down = 252
modules, PEFT key names) to a temp dir, then measures, interleaved per repeat so that
load from other processes hits every variant alike:

  ours      analyze_adapter(): open (mmap) + QR(Aᵀ), QR(B) (R factors only) per module on
            torch.get_num_threads() single-threaded workers + batched core SVD + table
  stacked   the same factorisation as one batched QR per stacked shape-group chunk
            (what a GPU runs; shown to justify the per-module CPU path)
  (a)       the straightforward per-module loop of the same method, the way reference
            implementations write it: load_file() everything, then per module
            torch.linalg.qr(A.T), torch.linalg.qr(B) (reduced, Q formed) and
            torch.linalg.svd(R_B @ R_A.T)
  (b)       a full SVD of B @ A per module (torch.linalg.svdvals of the out×in product,
            taken in its tall orientation), measured on one module per distinct shape
            and extrapolated to all 252 (time per shape × modules of that shape)

All timings include opening/loading the file (warm page cache: the file was just written).
`--threads 1` runs every variant on one thread; by default torch's thread count is used,
and on a CPU shared with other busy processes the multi-threaded peers then suffer
OpenMP barrier stalls, so report both.
Medians over the repeats; ratios are median(peer) / median(ours).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrain_core.squeeze import analyze_adapter
from retrain_core.squeeze.adapter import AdapterWeights, adapter_files, find_modules
from retrain_core.squeeze.svd import singular_values
from tests.support.adapters import qwen3_4b_like_adapter


def straightforward_loop(path: Path) -> dict[str, torch.Tensor]:
    """Peer (a): per-module QR + core SVD, as a reference implementation writes it."""
    from safetensors.torch import load_file

    tensors = load_file(str(path / "adapter_model.safetensors"))
    values = {}
    for key in tensors:
        if not key.endswith(".lora_A.weight"):
            continue
        a = tensors[key].float()
        b = tensors[key.replace(".lora_A.", ".lora_B.")].float()
        _q_a, r_a = torch.linalg.qr(a.T)
        _q_b, r_b = torch.linalg.qr(b)
        _u, s, _vh = torch.linalg.svd(r_b @ r_a.T)
        values[key] = s
    return values


def stacked(path: Path) -> list[torch.Tensor]:
    weights_path, _ = adapter_files(path)
    with AdapterWeights(weights_path) as weights:
        return singular_values(weights, find_modules(weights), strategy="stacked")


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def full_svd_peer(path: Path, names: list[str], ours: list[torch.Tensor]) -> dict:
    """Peer (b) on one module per distinct shape; per-shape time × module count."""
    weights_path, _ = adapter_files(path)
    with AdapterWeights(weights_path) as weights:
        modules = find_modules(weights)
        by_shape = defaultdict(list)
        for index, module in enumerate(modules):
            by_shape[module.matrix_shapes].append(index)
        total, worst_norm, worst_value, measured = 0.0, 0.0, 0.0, []
        for shape, indices in by_shape.items():
            module = modules[indices[0]]
            a, b = weights.get(module.key_a).float(), weights.get(module.key_b).float()
            # Tall orientation: same singular values, and LAPACK is several times faster
            # on it than on the wide product (2560×9728 for down_proj).
            seconds, reference = timed(lambda a=a, b=b: torch.linalg.svdvals(
                b @ a if b.shape[0] >= a.shape[1] else (b @ a).mT))
            total += seconds * len(indices)
            top = reference[: ours[indices[0]].numel()].double()
            error = (ours[indices[0]] - top).abs()
            worst_norm = max(worst_norm, float(error.max() / top[0]))
            worst_value = max(worst_value, float((error / top).max()))
            measured.append((module.name, shape, seconds, len(indices)))
    return {"total": total, "normwise": worst_norm, "per_value": worst_value, "measured": measured}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--dir", default="", help="adapter directory to reuse or create")
    parser.add_argument("--skip-full-svd", action="store_true", help="skip peer (b)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory(prefix="squeeze-bench-") as tmp:
        path = Path(args.dir or tmp) / "adapter"
        if not (path / "adapter_model.safetensors").exists():
            start = time.perf_counter()
            qwen3_4b_like_adapter(path)
            print(f"wrote synthetic adapter in {time.perf_counter() - start:.1f} s")
        size = (path / "adapter_model.safetensors").stat().st_size
        print(f"adapter: {path} ({size / 2**30:.2f} GiB)")

        times = defaultdict(list)
        analysis = None
        for repeat in range(args.repeats):
            seconds, analysis = timed(analyze_adapter, path)
            times["ours"].append(seconds)
            seconds, stacked_values = timed(stacked, path)
            times["stacked"].append(seconds)
            seconds, loop_values = timed(straightforward_loop, path)
            times["(a) loop"].append(seconds)
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                  flush=True)

        print(f"\n{analysis.num_layers} modules, source rank {analysis.source_rank}, "
              f"recommended rank {analysis.recommended_rank} at {analysis.threshold}")
        ours = statistics.median(times["ours"])
        print(f"\n{'variant':<10} {'median s':>9} {'min s':>7}  ratio vs ours")
        for name, values in times.items():
            print(f"{name:<10} {statistics.median(values):>9.3f} {min(values):>7.3f}  "
                  f"{statistics.median(values) / ours:.2f}x")

        # Agreement between the variants (all float64 singular values, same order).
        loop_list = list(loop_values.values())
        agree = max(float((x - y.double()).abs().max() / y.double().max())
                    for x, y in zip(analysis.singular_values, loop_list, strict=True))
        agree_stacked = max(float((x - y).abs().max() / y.max())
                            for x, y in zip(analysis.singular_values, stacked_values, strict=True))
        print(f"max normwise difference ours vs (a): {agree:.2e}, ours vs stacked: {agree_stacked:.2e}")

        print(f"load average now {os.getloadavg()[0]:.2f}")
        if not args.skip_full_svd:
            peer = full_svd_peer(path, analysis.module_names, analysis.singular_values)
            for name, shape, seconds, count in peer["measured"]:
                print(f"(b) svdvals(B@A) {name} {shape[1][0]}x{shape[0][1]}: {seconds:.2f} s "
                      f"(x{count} modules)")
            print(f"(b) full SVD, extrapolated to all modules: {peer['total']:.1f} s "
                  f"= {peer['total'] / ours:.0f}x ours")
            print(f"ours vs (b) on the measured modules: max |Δs|/s_max {peer['normwise']:.2e}, "
                  f"max per-value |Δs|/s {peer['per_value']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
