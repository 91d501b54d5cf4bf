"""One registry for every pluggable kind: built-ins, dotted paths and entry points.

A config value of a pluggable kind (say `[reward].type`) names one of:

- a built-in or one of its aliases (`boxed`; `nll` for the uncertainty kind `surprisal`),
- a dotted path `package.module.attr` or `package.module:attr`, looked up first in the
  given search folders (the config file's folder, `[plugins].search_paths`), then on
  `sys.path`,
- a name registered by an installed package under the entry-point group
  `retrain.plugins` as `KIND.NAME`, e.g. in its pyproject.toml:
  `[project.entry-points."retrain.plugins"] "reward.exact" = "mypkg.rewards:exact"`.

Validation, the launcher and the trainer all ask `REGISTRY`, so a name accepted by one
is accepted by all. Built-ins are `module:attr` strings imported only when resolved: the
config layer can check names without importing torch.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ENTRY_POINT_GROUP = "retrain.plugins"

# kind -> the config knob users write it in (for messages)
KINDS: dict[str, str] = {
    "backend": "[backend].backend",
    "launcher": "the campaign launcher",
    "inference_engine": "the sampling engine",
    "advantage": "[algorithm].advantage_mode",
    "transform": "[algorithm].transform_mode",
    "uncertainty": "[algorithm].uncertainty_kind",
    "algorithm": "[algorithm].algorithm_mode",
    "reward": "[reward].type",
    "data_source": "[data].source",
    "builtin_model": "[model].model (builtin:NAME)",
}

DOTTED_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*([.:][A-Za-z_]\w*)$")


class PluginError(ValueError):
    """A pluggable name that cannot be used; the message names the value and the cause."""


@dataclass(frozen=True)
class Builtin:
    kind: str
    name: str
    target: str  # "module:attr", imported on first resolve
    unavailable: str = ""  # why it cannot run in this installation ("" = it can)
    check: str = ""  # "module:fn"; fn(config) -> why it cannot run with this config, or None


def normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def is_dotted_path(value: str) -> bool:
    """`pkg.mod.attr` or `pkg.mod:attr` (a module and an attribute, at least)."""
    return ("." in value or ":" in value) and bool(DOTTED_PATH.match(value))


def split_dotted(value: str) -> tuple[str, str]:
    """("pkg.mod", "attr") from "pkg.mod.attr" or "pkg.mod:attr"."""
    if ":" in value:
        module, _, attr = value.partition(":")
    else:
        module, _, attr = value.rpartition(".")
    return module, attr


def module_file(search_paths: Iterable[Path], module: str) -> Path | None:
    """The file of `module` in the first search folder that has it (`a/b.py`, `a/b/__init__.py`)."""
    rel = Path(*module.split("."))
    for folder in search_paths:
        for candidate in (Path(folder) / rel.with_suffix(".py"), Path(folder) / rel / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    return None


class Registry:
    def __init__(self) -> None:
        self._builtins: dict[str, dict[str, Builtin]] = {kind: {} for kind in KINDS}
        self._aliases: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self._loaded: dict[tuple, object] = {}
        self._failed: dict[tuple, str] = {}
        self._entry_points: tuple[tuple[str, ...], dict[tuple[str, str], importlib.metadata.EntryPoint]] | None = None

    # -- registration ------------------------------------------------------------------
    def register(self, kind: str, name: str, target: str, *, aliases: Iterable[str] = (),
                 unavailable: str = "", check: str = "") -> None:
        self._builtins[kind][name] = Builtin(kind, name, target, unavailable, check)
        self._aliases[kind][normalise(name)] = name
        for alias in aliases:
            self._aliases[kind][normalise(alias)] = name

    def aliases(self, kind: str) -> dict[str, str]:
        """Every accepted spelling (normalised) -> the built-in name it means."""
        return dict(self._aliases[kind])

    def builtin(self, kind: str, name: str) -> Builtin | None:
        canonical = self.canonical(kind, name)
        return self._builtins[kind].get(canonical) if canonical else None

    def unavailable_reason(self, kind: str, name: str, config=None) -> str:
        """Why built-in `name` cannot run here (with `config`, when it has a check); "" = it can."""
        entry = self.builtin(kind, name)
        if entry is None:
            return ""
        if entry.unavailable or not entry.check or config is None:
            return entry.unavailable
        module, _, attr = entry.check.partition(":")
        return getattr(importlib.import_module(module), attr)(config) or ""

    def canonical(self, kind: str, name: str) -> str | None:
        """The built-in `name` means (alias resolved), or None when it is not a built-in."""
        return self._aliases[kind].get(normalise(name))

    def entry_points(self) -> dict[tuple[str, str], importlib.metadata.EntryPoint]:
        """(kind, name) -> entry point of group `retrain.plugins`; rescanned when sys.path changes."""
        key = tuple(sys.path)
        if self._entry_points is None or self._entry_points[0] != key:
            found = {}
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                kind, sep, name = ep.name.partition(".")
                if sep and kind in KINDS and name:
                    found[(kind, name)] = ep
            self._entry_points = (key, found)
        return self._entry_points[1]

    def names(self, kind: str, installed: bool = True) -> list[str]:
        """Built-in names, then (with `installed`) names from installed packages; no aliases."""
        extra = sorted(name for k, name in self.entry_points() if k == kind) if installed else []
        return [*self._builtins[kind], *extra]

    def knows(self, kind: str, value: str) -> bool:
        """Whether `value` is a built-in, an alias, an entry point or a dotted path (syntax only)."""
        return (self.canonical(kind, value) is not None or (kind, value) in self.entry_points()
                or is_dotted_path(value))

    def unknown_message(self, kind: str, value: str) -> str:
        from difflib import get_close_matches

        listed = ", ".join(f'"{n}"' for n in self.names(kind))
        close = get_close_matches(normalise(value), [*self._aliases[kind], *self.names(kind)], n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        word = {"data_source": "source", "builtin_model": "built-in model"}.get(kind, kind)
        return (f"unknown {word.replace('_', ' ')} {value!r}: expected one of {listed}, a dotted path "
                f"(package.module.name) or a '{ENTRY_POINT_GROUP}' entry point{hint}")

    # -- resolution --------------------------------------------------------------------
    def resolve(self, kind: str, value: str, search_paths: Iterable[str | Path] = ()) -> object:
        """The object `value` names for `kind`; PluginError saying why when it cannot."""
        entry = self.builtin(kind, value)
        if entry is not None:
            if entry.unavailable:
                raise PluginError(entry.unavailable)
            return self._import_attr(entry.target.partition(":")[0], entry.target.partition(":")[2],
                                     value, ())
        ep = self.entry_points().get((kind, value))
        if ep is not None:
            key = ("entry_point", kind, value, ep.value)
            if key not in self._loaded:
                try:
                    self._loaded[key] = ep.load()
                except Exception as exc:
                    raise PluginError(f"loading entry point {ep.name} = {ep.value} failed: "
                                      f"{type(exc).__name__}: {exc}") from exc
            return self._loaded[key]
        if not is_dotted_path(value):
            raise PluginError(self.unknown_message(kind, value))
        module, attr = split_dotted(value)
        return self._import_attr(module, attr, value, [Path(p) for p in search_paths])

    def locate(self, value: str, search_paths: Iterable[str | Path]) -> Path | None:
        """The file a dotted `value`'s module comes from when it is in a search folder."""
        if not is_dotted_path(value):
            return None
        return module_file([Path(p) for p in search_paths], split_dotted(value)[0])

    def _import_attr(self, module: str, attr: str, value: str, search_paths: list[Path]) -> object:
        file = module_file(search_paths, module)
        stamp = (file.stat().st_mtime_ns, file.stat().st_size) if file else None
        key = (module, attr, str(file), stamp)  # an edited plugin file is imported afresh
        if key in self._loaded:
            return self._loaded[key]
        if key in self._failed:
            raise PluginError(self._failed[key])
        try:
            if file is not None:
                loaded = _import_file(file, module)
            else:
                loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name) and file is None:
                where = ", ".join(str(p) for p in search_paths)
                message = (f"module '{module}' not found (searched "
                           f"{where + ' and ' if where else ''}sys.path)")
            else:
                message = f"importing {file or module} failed: {type(exc).__name__}: {exc}"
            self._fail(key, file, message)
        except BaseException as exc:  # a plugin may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._fail(key, file, f"importing {file or module} failed: {type(exc).__name__}: {exc}")
        found = getattr(loaded, attr, None)
        if found is None:
            self._fail(key, file, f"module '{module}' ({file or 'sys.path'}) has no function '{attr}'")
        if not callable(found):
            self._fail(key, file, f"'{attr}' in module '{module}' is not callable")
        self._loaded[key] = found
        return found

    def _fail(self, key: tuple, file: Path | None, message: str):
        if file is not None:  # files are cached by mtime; sys.path modules may appear later
            self._failed[key] = message
        raise PluginError(message)


def _import_file(path: Path, module: str):
    """Import a plugin file under a name unique to its path and contents.

    Two configs in different folders may both ship `plugins.py`; they must not shadow
    each other in sys.modules, and an edited file must not be served from the cache.
    """
    stat = path.stat()
    digest = hashlib.sha1(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:10]
    unique = f"_retrain_plugin_{digest}_{module.replace('.', '_')}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[unique] = loaded
    # The plugin may import helpers that sit next to it (or next to its package).
    root = str(path.parents[len(module.split(".")) - (1 if path.name != "__init__.py" else 0)])
    sys.path.insert(0, root)
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[unique]
        raise
    finally:
        try:
            sys.path.remove(root)
        except ValueError:
            pass
    return loaded


REGISTRY = Registry()

# Built-ins. Uncertainty aliases: every spelling the docs or teilomillet/retrain accept.
_ADV = "retrain_core.advantages"
for _name in ("grpo", "maxrl"):
    REGISTRY.register("advantage", _name, f"{_ADV}.episode:{_name}_advantages")
for _name in ("none", "gtpo", "gtpo_hicra", "gtpo_sepa"):
    REGISTRY.register("transform", _name, f"{_ADV}.pipeline:compute_advantages")
REGISTRY.register("uncertainty", "surprisal", f"{_ADV}.uncertainty:surprisal",
                  aliases=("token_surprisal", "surprise", "nll", "neg_logprob", "negative_logprob"))
REGISTRY.register("uncertainty", "shannon_entropy", f"{_ADV}.uncertainty:shannon_entropy",
                  aliases=("shannon", "entropy", "token_entropy"))
REGISTRY.register("uncertainty", "predictive_variance", f"{_ADV}.uncertainty:predictive_variance",
                  aliases=("pred_var", "variance", "bernoulli_variance"))
REGISTRY.register("reward", "boxed", "retrain_core.tasks.answers:boxed_reward")
REGISTRY.register("data_source", "arithmetic", "retrain_core.tasks.data:arithmetic_source")
REGISTRY.register("data_source", "jsonl", "retrain_core.tasks.data:jsonl_source")
REGISTRY.register("data_source", "math", "retrain_core.tasks.data:math_source")
REGISTRY.register("data_source", "reasoning_gym", "retrain_core.tasks.reasoning_gym:reasoning_gym_source",
                  aliases=("reasoning-gym",))
REGISTRY.register("reward", "reasoning_gym", "retrain_core.tasks.reasoning_gym:reasoning_gym_reward",
                  aliases=("reasoning-gym",))
REGISTRY.register("backend", "local", "retrain_core.train.backend:LocalBackend")
REGISTRY.register("backend", "tinker", "retrain_core.train.tinker_backend:TinkerBackend",
                  check="retrain_core.train.tinker_backend:tinker_unavailable_reason")
REGISTRY.register("inference_engine", "hf", "retrain_core.train.backend:LocalBackend", aliases=("local",))
REGISTRY.register("inference_engine", "vllm", "retrain_core.train.vllm_sampling:VllmBackend",
                  check="retrain_core.train.vllm_engine:vllm_unavailable_reason")
REGISTRY.register("launcher", "local", "retrain_core.supervisor.launcher:LocalLauncher")
REGISTRY.register("launcher", "ray", "retrain_core.supervisor.ray_launcher:RayLauncher",
                  check="retrain_core.supervisor.ray_launcher:ray_unavailable_reason")
REGISTRY.register("builtin_model", "tiny-arith", "retrain_core.models.tiny:tiny_model_path")
REGISTRY.register("builtin_model", "smollm2-135m", "retrain_core.models.smol:smollm2_model_path",
                  check="retrain_core.models.smol:unavailable_reason")
