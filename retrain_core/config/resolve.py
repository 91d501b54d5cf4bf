"""Resolution at load: what the config names must exist before anything starts.

Every path resolves against the folder of the TOML file (never the working directory).
`file_problems` is part of loading (explain, campaign, the TUI's live validation and the
trainer all get it): each plugin is imported once, each data source yields its first
example, a local model folder or `builtin:` model must be there. Imports and first
examples are cached by (file, mtime, size), so re-validating an unchanged document is
cheap. `environment_problems` is what depends on this machine rather than on files
(a hub model missing from the Hugging Face cache while offline: `campaign` refuses it,
`explain` prints it; a hub dataset such as `math` that cannot be read here is a note).
"""

from __future__ import annotations

import os
from pathlib import Path

from retrain_core.registry import REGISTRY, PluginError

from .errors import Problem
from .locate import line_of
from .schema import Config

# (section, key, registry kind) of every pluggable value that may name a plugin module
PLUGIN_KEYS = (("algorithm", "advantage_mode", "advantage"), ("algorithm", "transform_mode", "transform"),
               ("algorithm", "uncertainty_kind", "uncertainty"), ("algorithm", "algorithm_mode", "algorithm"),
               ("reward", "type", "reward"))
LOCAL_PREFIXES = ("/", "./", "../", "~")
ENVIRONMENT_SOURCES = ("math",)  # hub datasets: present or not depending on this machine
_FIRST_EXAMPLE: dict[tuple, str | None] = {}


def config_dir_of(source: str | Path) -> Path:
    return Path(source).expanduser().resolve().parent


def plugin_search_dirs(cfg: Config, config_dir: Path) -> list[Path]:
    """Where plugin modules are looked up before sys.path: the config file's folder.

    (What the trainer passes as `config_dir`; a campaign copies the plugin modules into
    each run's folder, next to its config.toml.)
    """
    return [config_dir]


def local_model_path(model: str, config_dir: Path) -> Path | None:
    """The folder a `[model].model` value names, or None for a hub id or a built-in."""
    if model.startswith("builtin:"):
        return None
    candidate = (config_dir / Path(model).expanduser()).resolve()
    if model.startswith(LOCAL_PREFIXES) or candidate.is_dir():
        return candidate
    return None


def _stamp(path: Path | None) -> tuple | None:
    try:
        stat = path.stat() if path else None
    except OSError:
        return None
    return (str(path), stat.st_mtime_ns, stat.st_size) if stat else None


def data_problem(source: str, config_dir: Path, dirs: list[Path]) -> str | None:
    """Why `source` cannot yield a first example (None when it can), cached by file stamps."""
    from retrain_core.tasks.data import DataError, first_example, source_path, split_source

    name, argument = split_source(source)
    file = source_path(argument, config_dir) if name == "jsonl" else REGISTRY.locate(source, dirs)
    key = (source, str(config_dir), tuple(map(str, dirs)), _stamp(file))
    if key not in _FIRST_EXAMPLE:
        try:
            first_example(source, config_dir, tuple(dirs))
            _FIRST_EXAMPLE[key] = None
        except DataError as exc:
            _FIRST_EXAMPLE[key] = str(exc).removeprefix("[data].source: ")
        except Exception as exc:  # noqa: BLE001 - a plugin source may raise anything
            _FIRST_EXAMPLE[key] = f"reading the first example failed: {type(exc).__name__}: {exc}"
    return _FIRST_EXAMPLE[key]


def model_problem(model: str, config_dir: Path) -> str | None:
    if model.startswith("builtin:"):
        entry = REGISTRY.builtin("builtin_model", model.removeprefix("builtin:"))
        if entry is not None and entry.check:  # made on first use (a conversion): only ask if it can be
            reason = REGISTRY.unavailable_reason("builtin_model", entry.name, model)
            return f"built-in model {model} cannot be used: {reason}" if reason else None
        try:
            path = REGISTRY.resolve("builtin_model", model.removeprefix("builtin:"))()
        except (PluginError, OSError) as exc:
            return f"built-in model {model} cannot be used: {exc}"
        return None if Path(path).is_dir() else f"built-in model {model}: {path} is missing"
    folder = local_model_path(model, config_dir)
    if folder is None:
        return None
    if not folder.is_dir():
        return f"local model folder not found: {folder} (relative paths are relative to {config_dir})"
    if not (folder / "config.json").is_file():
        return f"{folder} is not a model folder (no config.json in it)"
    return None


def _key(located: dict[str, int], base: str, section: str, name: str) -> str:
    """The key as written: in a condition (`reward_type`, `reward.type`, …) or in the section."""
    if base:
        for candidate in (f"{base}.{name}", f"{base}.{section}_{name}", f"{base}.{section}.{name}"):
            if candidate in located:
                return candidate
    return f"{section}.{name}"


def file_problems(campaign, located: dict[str, int]) -> list[Problem]:
    """Plugins, data sources and model references of every run, checked against the files."""
    file, config_dir = str(campaign.source), config_dir_of(campaign.source)
    problems: dict[tuple[str, str], Problem] = {}

    def add(base: str, section: str, name: str, message: str) -> None:
        key = _key(located, base, section, name)
        problems.setdefault((key, message), Problem(file, line_of(located, key), key, message))

    for run in campaign.runs:
        cfg = run.config
        index = campaign.conditions.index(run.condition) if campaign.is_campaign else -1
        base = f"campaign.conditions[{index}]" if index >= 0 else ""
        dirs = plugin_search_dirs(cfg, config_dir)
        for section, name, kind in PLUGIN_KEYS:
            value = getattr(getattr(cfg, section), name)
            if not value or REGISTRY.canonical(kind, value) is not None:
                continue
            where = base if f"{section}.{name}" in run.condition.overrides or name in (
                "advantage_mode", "transform_mode") else ""
            try:
                REGISTRY.resolve(kind, value, dirs)
            except PluginError as exc:
                add(where, section, name, f'cannot use "{value}": {exc}')
        source = cfg.data.source
        if source not in ENVIRONMENT_SOURCES:
            message = data_problem(source, config_dir, dirs)
            if message:
                add(base if "data.source" in run.condition.overrides else "", "data", "source", message)
        message = model_problem(cfg.model.model, config_dir)
        if message:
            add(base if "model.model" in run.condition.overrides else "", "model", "model", message)
    return list(problems.values())


def offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


_HUB_REACHABLE: list[bool] = []  # asked once per process


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within `timeout_s` (False offline).

    Asked before any hub lookup of a check: on a box without network the hub libraries retry
    for about a minute, which `explain` and the editor's live validation must not wait for."""
    if offline():
        return False
    if not _HUB_REACHABLE:
        import socket
        from urllib.parse import urlparse

        endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        try:
            socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
            _HUB_REACHABLE.append(True)
        except OSError:
            _HUB_REACHABLE.append(False)
    return _HUB_REACHABLE[0]


def hub_model_cached(model: str, revision: str = "") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(model, "config.json", revision=revision or None)
    except Exception:  # noqa: BLE001 - an id the hub library refuses is simply not cached
        return False
    return isinstance(found, str)


def environment_problems(cfg: Config, config_dir: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(problems as (key, message), notes) that depend on this machine, for one config."""
    problems, notes = [], []
    model = cfg.model.model
    hub_id = not model.startswith("builtin:") and local_model_path(model, config_dir) is None
    if hub_id and not hub_model_cached(model, cfg.model.revision):
        if offline():
            problems.append(("model.model", (f'"{model}" is not in the Hugging Face cache and '
                             "HF_HUB_OFFLINE is set: download it first or use a local folder")))
        elif hub_reachable():
            notes.append(f'model "{model}" is not in the Hugging Face cache: it will be '
                         "downloaded from the hub when the first run starts")
        else:
            notes.append(f'model "{model}" is not in the Hugging Face cache and the hub is not '
                         "reachable from here: download it first, or the runs will fail")
    engine = REGISTRY.unavailable_reason("inference_engine", cfg.inference.engine, cfg)
    if engine:
        problems.append(("inference.engine", f'engine "{cfg.inference.engine}" cannot run here: {engine}'))
    if cfg.data.source in ENVIRONMENT_SOURCES:
        # A note, not a refusal: a stand-in trainer (RETRAIN_TRAINER_CMD) or a box that gets
        # the dataset before the runs start may still launch it.
        if hub_reachable():
            message = data_problem(cfg.data.source, config_dir, [])
        else:  # read the local cache only: no minute of retries against an unreachable hub
            with _hub_offline():
                message = data_problem(cfg.data.source, config_dir, [])
        if message:
            notes.append(message if message.startswith("[data]") else f"[data].source: {message}")
    return problems, notes


class _hub_offline:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set for the duration (the hub libraries read them
    when first imported; a check runs before the trainer ever imports them in this process)."""

    NAMES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")

    def __enter__(self):
        self.saved = {name: os.environ.get(name) for name in self.NAMES}
        os.environ.update(dict.fromkeys(self.NAMES, "1"))

    def __exit__(self, *exc):
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
