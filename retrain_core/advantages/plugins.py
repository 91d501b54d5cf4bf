"""Plugins for the advantage pipeline, resolved through `retrain_core.registry`.

A plugin is a dotted path (`module.function` or `package.module:function`, looked up first
in the plugin folders — the config file's folder and `[plugins].search_paths` — then on
`sys.path`) or a name registered under the `retrain.plugins` entry-point group.
Signatures (all tensors torch, N completions, T token slots):

- advantage_mode:   f(rewards[N], group_ids[N], params: dict) -> Tensor[N]
- uncertainty_kind: f(logprobs[N,T], mask[N,T], entropies[N,T] | None) -> Tensor[N,T]
- transform_mode:   f(episode_adv[N], uncertainty[N,T], mask[N,T], planning_mask[N,T],
                      params: dict, sepa_lambda: float) -> Tensor[N,T]
- algorithm_mode:   f(**compute_advantages keyword arguments) -> AdvantageOutput
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from retrain_core.registry import REGISTRY, PluginError, is_dotted_path, split_dotted

# config knob -> registry kind
KNOB_KINDS = {"advantage_mode": "advantage", "transform_mode": "transform",
              "uncertainty_kind": "uncertainty", "algorithm_mode": "algorithm"}


def is_plugin_path(name: str) -> bool:
    """A dotted path, or a name some installed package registers as a plugin."""
    return is_dotted_path(name) or any(n == name for _, n in REGISTRY.entry_points())


def split_plugin_path(path: str) -> tuple[str, str]:
    """("package.module", "function") from "package.module.function" or "package.module:function"."""
    return split_dotted(path)


def plugin_dirs(plugin_dir: str | Path | list | tuple | None) -> list[Path]:
    if plugin_dir is None:
        return []
    if isinstance(plugin_dir, (list, tuple)):
        return [Path(p) for p in plugin_dir]
    return [Path(plugin_dir)]


def resolve_plugin(path: str, kind: str, base_dir: str | Path | list | tuple | None = None) -> Callable:
    """The function `path` names for the config knob `kind` (e.g. "advantage_mode").

    Raises ValueError naming the knob and the path when the module or the function is
    missing, the import fails, or the attribute is not callable.
    """
    try:
        return REGISTRY.resolve(KNOB_KINDS.get(kind, kind), path, plugin_dirs(base_dir))
    except PluginError as exc:
        raise ValueError(f"{kind} {path!r}: {exc}") from None


def check_tensor(result, expected_shape: tuple[int, ...], kind: str, path: str) -> torch.Tensor:
    """The plugin's result as a float tensor, or ValueError naming knob, path and shapes."""
    if not isinstance(result, torch.Tensor):
        try:
            result = torch.as_tensor(result)
        except Exception as exc:
            raise ValueError(
                f"{kind} {path!r} returned {type(result).__name__}, expected a tensor of "
                f"shape {expected_shape}"
            ) from exc
    if tuple(result.shape) != tuple(expected_shape):
        raise ValueError(
            f"{kind} {path!r} returned shape {tuple(result.shape)}, expected {tuple(expected_shape)}"
        )
    if not result.is_floating_point():
        result = result.to(torch.float32)
    return result
