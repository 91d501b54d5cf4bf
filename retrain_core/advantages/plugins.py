"""Dotted-path plugins (`module.function`) for the advantage pipeline.

A plugin path is resolved first against a base directory (the config file's directory),
then against `sys.path`. Signatures (all tensors torch, N completions, T token slots):

- advantage_mode:   f(rewards[N], group_ids[N], params: dict) -> Tensor[N]
- uncertainty_kind: f(logprobs[N,T], mask[N,T], entropies[N,T] | None) -> Tensor[N,T]
- transform_mode:   f(episode_adv[N], uncertainty[N,T], mask[N,T], planning_mask[N,T],
                      params: dict, sepa_lambda: float) -> Tensor[N,T]
- algorithm_mode:   f(**compute_advantages keyword arguments) -> AdvantageOutput
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch

_CACHE: dict[tuple[str, str], Callable] = {}


def is_plugin_path(name: str) -> bool:
    """Built-in modes are plain words; `module.function` (or `package.module:function`) is a plugin."""
    return "." in name or ":" in name


def split_plugin_path(path: str) -> tuple[str, str]:
    """("package.module", "function") from "package.module.function" or "package.module:function"."""
    if ":" in path:
        module_name, _, func_name = path.partition(":")
    else:
        module_name, _, func_name = path.rpartition(".")
    return module_name, func_name


def _module_file(base_dir: Path, module_name: str) -> Path | None:
    rel = Path(*module_name.split("."))
    for candidate in (base_dir / rel.with_suffix(".py"), base_dir / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _import_from_file(path: Path, module_name: str, base_dir: Path):
    # A unique module name per file: two configs in different directories may both ship
    # a `plugins.py`, and they must not shadow each other in sys.modules.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    unique = f"_retrain_plugin_{digest}_{module_name.replace('.', '_')}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    # The plugin may import helpers that sit next to it.
    sys.path.insert(0, str(base_dir))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique]
        raise
    finally:
        try:
            sys.path.remove(str(base_dir))
        except ValueError:
            pass
    return module


def resolve_plugin(path: str, kind: str, base_dir: str | Path | None = None) -> Callable:
    """Import `module.function` for the config knob `kind` (e.g. "advantage_mode").

    Raises ValueError naming the knob and the path when the module or the function is
    missing, or when the attribute is not callable.
    """
    key = (str(base_dir or ""), path)
    if key in _CACHE:
        return _CACHE[key]
    module_name, func_name = split_plugin_path(path)
    if not module_name or not func_name:
        raise ValueError(f"{kind} {path!r}: a plugin path must look like 'module.function'")
    where = f"{base_dir} and sys.path" if base_dir else "sys.path"
    module = None
    if base_dir is not None:
        base = Path(base_dir)
        file = _module_file(base, module_name)
        if file is not None:
            try:
                module = _import_from_file(file, module_name, base)
            except Exception as exc:
                raise ValueError(f"{kind} {path!r}: importing {file} failed: {exc!r}") from exc
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ValueError(
                f"{kind} {path!r}: module {module_name!r} not found (searched {where})"
            ) from exc
        except Exception as exc:
            raise ValueError(f"{kind} {path!r}: importing module {module_name!r} failed: {exc!r}") from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise ValueError(
            f"{kind} {path!r}: module {module_name!r} ({getattr(module, '__file__', '?')}) "
            f"has no function {func_name!r}"
        )
    if not callable(func):
        raise ValueError(f"{kind} {path!r}: {func_name!r} is not callable")  # noqa: TRY004
    _CACHE[key] = func
    return func


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
