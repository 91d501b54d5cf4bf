"""The public entry point: episode advantages → uncertainty → (SEPA) → GTPO → (HICRA).

Transform modes: none (the episode advantage on every token), gtpo, gtpo_hicra, gtpo_sepa.
Every built-in step is masked tensor arithmetic over the padded [N, T] batch;
plugins (dotted paths) may replace any step, or the whole pipeline (algorithm_mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .episode import EPISODE_MODES, group_index, skipped_completions
from .plugins import check_tensor, is_plugin_path, resolve_plugin
from .transforms import (
    STAT_KEYS,
    apply_hicra_,
    check_hicra_alpha,
    gtpo_clean,
    sepa_pool_clean,
    uncertainty_stats,
)
from .uncertainty import UNCERTAINTY_KINDS, canonical_uncertainty_kind, finalize_uncertainty

TRANSFORM_MODES = ("none", "gtpo", "gtpo_hicra", "gtpo_sepa")


@dataclass
class AdvantageOutput:
    token_advantages: torch.Tensor  # [N, T], exactly 0 on padding and skipped groups
    episode_advantages: torch.Tensor  # [N], 0 for skipped groups
    skipped: torch.Tensor  # bool [N]
    stats: dict[str, float] = field(default_factory=dict)
    uncertainty: torch.Tensor | None = None  # [N, T] before pooling, 0 on padding


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    # bf16/fp16 logprobs from the model are upcast; float64 inputs keep their precision.
    return torch.promote_types(t.dtype, torch.float32) if t.is_floating_point() else torch.float32


def _episode(rewards, group_ids, advantage_mode, params, plugin_dir) -> torch.Tensor:
    if advantage_mode in EPISODE_MODES:
        return EPISODE_MODES[advantage_mode](rewards, group_ids, params)
    if not is_plugin_path(advantage_mode):
        raise ValueError(
            f"unknown advantage_mode {advantage_mode!r}: expected one of "
            f"{', '.join(EPISODE_MODES)} or a dotted plugin path 'module.function'"
        )
    func = resolve_plugin(advantage_mode, "advantage_mode", plugin_dir)
    out = func(rewards, group_ids, dict(params))
    return check_tensor(out, tuple(rewards.shape), "advantage_mode", advantage_mode).to(rewards.dtype)


def _uncertainty(kind, logprobs, mask, entropies, plugin_dir) -> torch.Tensor:
    canonical = canonical_uncertainty_kind(kind)
    if canonical is not None:
        values = UNCERTAINTY_KINDS[canonical](logprobs, mask, entropies)
    elif is_plugin_path(kind):
        func = resolve_plugin(kind, "uncertainty_kind", plugin_dir)
        out = func(logprobs, mask.bool(), entropies)
        values = check_tensor(out, tuple(logprobs.shape), "uncertainty_kind", kind)
        values = values.to(logprobs.dtype, copy=True)  # finalised in place: never an input
    else:
        raise ValueError(
            f"unknown uncertainty_kind {kind!r}: expected one of {', '.join(UNCERTAINTY_KINDS)} "
            "(or an alias) or a dotted plugin path 'module.function'"
        )
    return finalize_uncertainty(values, mask)


def _check_inputs(rewards, group_ids, logprobs, mask, planning_mask) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [N, T], got shape {tuple(logprobs.shape)}")
    n, t = logprobs.shape
    for name, tensor, shape in (
        ("rewards", rewards, (n,)),
        ("group_ids", group_ids, (n,)),
        ("mask", mask, (n, t)),
        ("planning_mask", planning_mask, (n, t)),
    ):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")


def compute_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    planning_mask: torch.Tensor | None = None,
    advantage_mode: str = "maxrl",
    transform_mode: str = "gtpo_sepa",
    uncertainty_kind: str = "surprisal",
    entropies: torch.Tensor | None = None,
    gtpo_beta: float = 0.1,
    hicra_alpha: float = 0.2,
    sepa_lambda: float = 0.0,
    advantage_params: dict | None = None,
    transform_params: dict | None = None,
    algorithm_mode: str = "",
    plugin_dir: str | Path | None = None,
) -> AdvantageOutput:
    """Token advantages for one step of B×G completions (see the module docstring)."""
    rewards = torch.as_tensor(rewards)
    group_ids = torch.as_tensor(group_ids)
    logprobs = torch.as_tensor(logprobs)
    mask = torch.as_tensor(mask).bool()
    _check_inputs(rewards, group_ids, logprobs, mask, planning_mask)
    dtype = _work_dtype(logprobs)
    logprobs = logprobs.to(dtype)
    rewards = rewards.to(_work_dtype(rewards))
    planning = (
        torch.zeros_like(mask) if planning_mask is None else torch.as_tensor(planning_mask).bool() & mask
    )
    if algorithm_mode:
        return _run_algorithm_plugin(
            algorithm_mode, plugin_dir, locals_for_plugin={
                "rewards": rewards, "group_ids": group_ids, "logprobs": logprobs, "mask": mask,
                "planning_mask": planning, "advantage_mode": advantage_mode,
                "transform_mode": transform_mode, "uncertainty_kind": uncertainty_kind,
                "entropies": entropies, "gtpo_beta": gtpo_beta, "hicra_alpha": hicra_alpha,
                "sepa_lambda": sepa_lambda, "advantage_params": dict(advantage_params or {}),
                "transform_params": dict(transform_params or {}), "plugin_dir": plugin_dir,
            },
        )

    index, num_groups = group_index(group_ids)
    skipped = skipped_completions(rewards, index, num_groups)
    episode = _episode(rewards, group_ids, advantage_mode, advantage_params or {}, plugin_dir)
    episode = torch.where(skipped, torch.zeros_like(episode), episode)

    # 0/1 float masks, built once: every transform selects by multiplying with them.
    # Skipped groups need no mask of their own: their episode advantage is exactly 0.
    mask_w = torch.empty_like(logprobs).copy_(mask)
    plan_w = torch.empty_like(logprobs).copy_(planning)
    uncertainty = _uncertainty(uncertainty_kind, logprobs, mask_w, entropies, plugin_dir)
    pooled = uncertainty
    if transform_mode == "none":
        tokens = episode.to(dtype)[:, None] * mask_w
    elif transform_mode == "gtpo":
        tokens = gtpo_clean(episode, uncertainty, mask_w, gtpo_beta)
    elif transform_mode == "gtpo_hicra":
        check_hicra_alpha(hicra_alpha)
        tokens = apply_hicra_(gtpo_clean(episode, uncertainty, mask_w, gtpo_beta), plan_w, hicra_alpha)
    elif transform_mode == "gtpo_sepa":
        pooled = sepa_pool_clean(uncertainty, mask_w - plan_w, sepa_lambda)
        tokens = gtpo_clean(episode, pooled, mask_w, gtpo_beta)
    elif is_plugin_path(transform_mode):
        func = resolve_plugin(transform_mode, "transform_mode", plugin_dir)
        out = func(episode, uncertainty, mask, planning, dict(transform_params or {}), float(sepa_lambda))
        tokens = check_tensor(out, tuple(logprobs.shape), "transform_mode", transform_mode).to(dtype)
        # A plugin may leave anything (even NaN) on padding: select, do not multiply.
        tokens = torch.where(mask & ~skipped[:, None], tokens, torch.zeros_like(tokens))
    else:
        raise ValueError(
            f"unknown transform_mode {transform_mode!r}: expected one of "
            f"{', '.join(TRANSFORM_MODES)} or a dotted plugin path 'module.function'"
        )
    return AdvantageOutput(
        token_advantages=tokens,
        episode_advantages=episode,
        skipped=skipped,
        stats=uncertainty_stats(uncertainty, pooled, mask_w, plan_w),
        uncertainty=uncertainty,
    )


def _run_algorithm_plugin(path: str, plugin_dir, locals_for_plugin: dict) -> AdvantageOutput:
    """algorithm_mode: the plugin gets every argument and returns the whole AdvantageOutput."""
    func = resolve_plugin(path, "algorithm_mode", plugin_dir)
    result = func(**locals_for_plugin)
    if isinstance(result, dict):
        try:
            result = AdvantageOutput(**result)
        except TypeError as exc:
            raise ValueError(f"algorithm_mode {path!r} returned a dict that is not an AdvantageOutput: {exc}") from exc
    if not isinstance(result, AdvantageOutput):
        raise ValueError(  # noqa: TRY004 - plugin errors are ValueErrors naming the knob
            f"algorithm_mode {path!r} returned {type(result).__name__}, expected AdvantageOutput "
            "(from retrain_core.advantages import AdvantageOutput)"
        )
    mask = locals_for_plugin["mask"]
    n, t = mask.shape
    tokens = check_tensor(result.token_advantages, (n, t), "algorithm_mode", path)
    episode = check_tensor(result.episode_advantages, (n,), "algorithm_mode", path)
    skipped = torch.as_tensor(result.skipped).bool()
    if tuple(skipped.shape) != (n,):
        raise ValueError(f"algorithm_mode {path!r} returned skipped of shape {tuple(skipped.shape)}, expected ({n},)")
    active = mask & ~skipped[:, None]
    stats = dict(result.stats or {})
    missing = [k for k in STAT_KEYS if k not in stats]
    if missing:
        # metrics.jsonl always carries every key: fill the gaps with the built-in statistics.
        raw = _uncertainty("surprisal", locals_for_plugin["logprobs"], mask.float(), None, None)
        defaults = uncertainty_stats(raw, raw, mask, locals_for_plugin["planning_mask"])
        stats.update({k: defaults[k] for k in missing})
    return AdvantageOutput(
        token_advantages=torch.where(active, tokens, torch.zeros_like(tokens)),
        episode_advantages=episode,
        skipped=skipped,
        stats=stats,
        uncertainty=result.uncertainty,
    )
