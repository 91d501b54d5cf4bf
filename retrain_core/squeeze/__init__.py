"""LoRA-Squeeze: adapter analysis, rank recommendation and compression.

See docs/ARCHITECTURE.md ("Squeeze") for the contract other packages code against.
"""

from __future__ import annotations

from .adapter import SqueezeError
from .analysis import SqueezeAnalysis, VarianceRow, analyze_adapter, render_table
from .compress import compress_adapter

__all__ = ["SqueezeAnalysis", "SqueezeError", "VarianceRow", "analyze_adapter",
           "compress_adapter", "render_table"]
