"""Retained-variance table and rank recommendation.

`V(k) = Σ_{i<k} s_i² / Σ s_i²` per module (1.0 when the total is 0); each row of the
table gives the mean, min and max of `V(k)` over modules and the worst module's name.
The recommended rank is the smallest target whose mean reaches the threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .adapter import AdapterWeights, SqueezeError, adapter_files, find_modules, read_adapter_config
from .svd import singular_values


@dataclass
class VarianceRow:
    rank: int
    mean: float
    min: float
    max: float
    worst_module: str
    recommended: bool = False

    def to_dict(self) -> dict:
        return {"rank": self.rank, "mean": self.mean, "min": self.min, "max": self.max,
                "worst_module": self.worst_module, "recommended": self.recommended}


@dataclass
class SqueezeAnalysis:
    adapter: str
    source_rank: int
    threshold: float
    recommended_rank: int
    rows: list[VarianceRow]
    module_names: list[str] = field(default_factory=list)
    singular_values: list[torch.Tensor] = field(default_factory=list)  # float64, descending
    elapsed_s: float = 0.0

    @property
    def num_layers(self) -> int:
        return len(self.module_names)

    def to_dict(self) -> dict:
        """What `squeeze/analysis.json` holds (docs/ARCHITECTURE.md "Squeeze")."""
        return {"adapter": self.adapter, "source_rank": self.source_rank,
                "recommended_rank": self.recommended_rank, "threshold": self.threshold,
                "num_layers": self.num_layers, "rows": [row.to_dict() for row in self.rows]}


def default_target_ranks(source_rank: int) -> list[int]:
    """Powers of two below the source rank, plus the source rank itself."""
    ranks, k = [], 1
    while k < source_rank:
        ranks.append(k)
        k *= 2
    return ranks + [source_rank]


def check_targets(target_ranks: list[int] | None, source_rank: int) -> list[int]:
    if not target_ranks:
        return default_target_ranks(source_rank)
    bad = [k for k in target_ranks if not isinstance(k, int) or isinstance(k, bool) or k < 1]
    if bad:
        raise SqueezeError(f"[squeeze].target_ranks: expected positive integers, found {bad}")
    above = [k for k in target_ranks if k > source_rank]
    if above:
        raise SqueezeError(f"[squeeze].target_ranks: {above} exceed the source rank {source_rank}")
    return sorted(set(target_ranks))


RETENTION_TOLERANCE = 1e-10


def variance_matrix(values: list[torch.Tensor], ranks: list[int]) -> torch.Tensor:
    """V(k) for every (module, k): a [modules, len(ranks)] float64 tensor."""
    width = max(v.numel() for v in values)
    energy = torch.zeros(len(values), width, dtype=torch.float64)
    for row, v in enumerate(values):
        energy[row, : v.numel()] = v.double() ** 2
    cumulative = energy.cumsum(dim=1)
    total = cumulative[:, -1:]
    # Beyond a module's own rank bound its cumulative energy is already the total.
    columns = torch.tensor([min(k, width) - 1 for k in ranks])
    retained = cumulative[:, columns]
    return torch.where(total > 0, retained / total.clamp_min(1e-300), torch.ones_like(retained))


def variance_table(values: list[torch.Tensor], names: list[str], ranks: list[int],
                   threshold: float) -> tuple[list[VarianceRow], int | None]:
    """Rows of the table and the recommended rank (None if no target reaches the threshold)."""
    v = variance_matrix(values, ranks)
    means, mins, maxs = v.mean(dim=0), v.min(dim=0), v.max(dim=0).values
    rows = [VarianceRow(rank=k, mean=float(means[j]), min=float(mins.values[j]),
                        max=float(maxs[j]), worst_module=names[int(mins.indices[j])])
            for j, k in enumerate(ranks)]
    # V(k) is computed in float64 end to end (QR, core SVD, sums): its rounding error is
    # ~1e-15 relative; RETENTION_TOLERANCE leaves room for that and no more.
    recommended = next((row.rank for row in rows if row.mean >= threshold - RETENTION_TOLERANCE), None)
    for row in rows:
        row.recommended = row.rank == recommended
    return rows, recommended


def analyze_adapter(path, min_variance_retention: float = 0.95, target_ranks=None,
                    source_rank: int | None = None, device: str = "cpu") -> SqueezeAnalysis:
    """Analyse the LoRA adapter at `path` (a PEFT directory or its weights file); a
    `source_rank` (None or 0: read it from the adapter) must match the adapter's."""
    started = time.perf_counter()
    if not 0.0 < float(min_variance_retention) <= 1.0:
        raise SqueezeError(f"[squeeze].min_variance_retention: expected a value in (0, 1], "
                           f"found {min_variance_retention}")
    weights_path, config_path = adapter_files(path)
    read_adapter_config(config_path)  # a broken config is reported even when unused here
    with AdapterWeights(weights_path) as weights:
        modules = find_modules(weights)
        detected = max(m.rank for m in modules)
        if source_rank and source_rank != detected:
            raise SqueezeError(f"[squeeze].source_rank = {source_rank}, but {weights_path} "
                               f"holds rank {detected}")
        values = singular_values(weights, modules, device=device)
    names = [m.name for m in modules]
    ranks = check_targets(list(target_ranks) if target_ranks else None, detected)
    rows, recommended = variance_table(values, names, ranks, float(min_variance_retention))
    return SqueezeAnalysis(
        adapter=str(Path(path)), source_rank=detected, threshold=float(min_variance_retention),
        # No target reaches the threshold: keep the source rank (no compression).
        recommended_rank=recommended if recommended is not None else detected,
        rows=rows, module_names=names, singular_values=values,
        elapsed_s=time.perf_counter() - started)


def render_table(analysis: SqueezeAnalysis) -> str:
    """The variance table as aligned text for a terminal."""
    name_width = max([len("worst module")] + [len(r.worst_module) for r in analysis.rows])
    lines = [f"LoRA-Squeeze: {analysis.adapter}",
             (f"source rank {analysis.source_rank}, {analysis.num_layers} modules, "
              f"threshold {analysis.threshold:g}, analysed in {analysis.elapsed_s:.2f} s"),
             "",
             f"{'rank':>6}  {'mean':>8}  {'min':>8}  {'max':>8}  {'worst module':<{name_width}}"]
    for row in analysis.rows:
        mark = "  <- recommended" if row.recommended else ""
        lines.append(f"{row.rank:>6}  {row.mean:>8.4f}  {row.min:>8.4f}  {row.max:>8.4f}  "
                     f"{row.worst_module:<{name_width}}{mark}")
    if not any(row.recommended for row in analysis.rows):
        lines.append(f"no target rank keeps a mean of {analysis.threshold:g}: "
                     f"recommending the source rank {analysis.source_rank}")
    lines.append("")
    lines.append(f"recommended rank: {analysis.recommended_rank}")
    return "\n".join(lines)
