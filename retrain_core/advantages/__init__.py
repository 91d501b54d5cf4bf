"""Advantage pipeline: episode advantages, uncertainty, GTPO/HICRA/SEPA (README.md, "Advantages").

    from retrain_core.advantages import compute_advantages, PlanningDetector
"""

from .episode import correct_rate, grpo_advantages, maxrl_advantages
from .grams import GramMatcher, compile_gram_pattern
from .pipeline import TRANSFORM_MODES, AdvantageOutput, compute_advantages
from .planning import PlanningDetector
from .plugins import is_plugin_path, resolve_plugin
from .transforms import STAT_KEYS, apply_hicra, gtpo_token_advantages, sepa_pool
from .uncertainty import UNCERTAINTY_ALIASES, UNCERTAINTY_CAP, canonical_uncertainty_kind

__all__ = [
    "STAT_KEYS",
    "TRANSFORM_MODES",
    "UNCERTAINTY_ALIASES",
    "UNCERTAINTY_CAP",
    "AdvantageOutput",
    "GramMatcher",
    "PlanningDetector",
    "apply_hicra",
    "canonical_uncertainty_kind",
    "compile_gram_pattern",
    "compute_advantages",
    "correct_rate",
    "grpo_advantages",
    "gtpo_token_advantages",
    "is_plugin_path",
    "maxrl_advantages",
    "resolve_plugin",
    "sepa_pool",
]
