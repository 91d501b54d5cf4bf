"""The reward function a run uses, resolved from `[reward] type`.

The scorers themselves (`boxed`, `reasoning_gym`) live with their tasks in
`retrain_core.tasks`; this module only looks one up through the registry and wraps it so a
non-finite reward is an error that names it.
"""

from __future__ import annotations

from pathlib import Path

from retrain_core.tasks.answers import RewardFn


def resolve_reward(kind: str, config_dir: str | Path | None = None,
                   search_paths: tuple[str | Path, ...] = ()) -> RewardFn:
    """`boxed`, a dotted path `module.function` (looked up in the config's folder and the
    search paths first) or a `reward.NAME` entry point: see `retrain_core.registry`."""
    from retrain_core.registry import REGISTRY, PluginError

    dirs = [d for d in (config_dir, *search_paths) if d is not None]
    from retrain_core.train.finite import finite_reward

    try:
        return finite_reward(REGISTRY.resolve("reward", kind, dirs), kind)
    except PluginError as exc:
        raise ValueError(f"[reward].type: {exc}") from None
