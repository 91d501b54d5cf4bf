"""Creating a campaign directory: copy of the TOML, manifest, per-run configs.

The layout and every file's fields: docs/ARCHITECTURE.md ("Campaign directory and supervisor").
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import shutil
import time
import tomllib
from pathlib import Path

from retrain_core.atomic import atomic_write_text
from retrain_core.config import Campaign, config_to_toml, launch_problems
from retrain_core.config.resolve import PLUGIN_KEYS, config_dir_of, local_model_path
from retrain_core.config.schema import toml_values
from retrain_core.gpus import pool_problem, resolve_pool
from retrain_core.registry import REGISTRY, split_dotted

from .files import (
    CAMPAIGN_TOML,
    CONTROL,
    MANIFEST,
    RUNS,
    SQUEEZE,
    STATE,
    THROTTLE,
    atomic_write_json,
    now,
)


class LaunchError(Exception):
    """The campaign cannot start (explained to the user, nothing was launched)."""


def check_launchable(campaign: Campaign) -> None:
    problems = launch_problems(campaign)  # the same list `explain` prints
    if problems:
        raise LaunchError("\n".join(str(p) for p in problems) + "\nno run was started")
    if not campaign.runs:
        raise LaunchError(f"{campaign.source}: the campaign has no runs")
    gpu_problem = "" if campaign.settings.launcher == "ray" else pool_problem(  # Ray places GPUs
        campaign.base.backend.devices, campaign.settings.gpus_per_run)
    if gpu_problem:
        raise LaunchError(f"{campaign.source}: {gpu_problem}; no run was started")


def squeeze_requested(source: Path) -> bool:
    """Whether the file as written has a [squeeze] table (defaults exist either way)."""
    try:
        return "squeeze" in tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False


def new_campaign_dir(logs_dir: Path) -> Path:
    logs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        name = f"campaign_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
        path = logs_dir / name
        try:
            # User-only: configs, metrics, generations and optimizer state are the user's,
            # and nobody else may open (and so lock) supervisor.lock.
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise LaunchError(f"could not create a unique campaign directory under {logs_dir}")


def initial_run_state() -> dict:
    return {"status": "pending", "pid": None, "pgid": None, "proc_start_time": None,
            "attempt": 0, "exit_code": None, "signal": None, "launched_at": None,
            "ended_at": None, "error": "", "retries": 0, "launching": False, "gpus": []}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plugin_sources(cfg, config_dir: Path) -> list[tuple[Path, str]]:
    """(file or package folder, name inside a run folder) of each plugin module next to the TOML."""
    found = []
    values = [(kind, getattr(getattr(cfg, section), name)) for section, name, kind in PLUGIN_KEYS]
    values.append(("data_source", cfg.data.source))
    for kind, value in values:
        if not value or REGISTRY.canonical(kind, value) is not None:
            continue
        file = REGISTRY.locate(value, [config_dir])
        if file is None:
            continue  # an installed package or an entry point: not ours to copy
        top = split_dotted(value)[0].split(".")[0]
        package = config_dir / top
        found.append((package, top) if package.is_dir() else (file, file.name))
    return found


def bundle_run_files(campaign: Campaign, root: Path) -> tuple[dict[str, dict], list[dict]]:
    """Copy what the runs read into the campaign folder; return per-run config edits and
    the manifest's `files` list (what was copied from where, with its sha256).

    Plugin modules go into each run folder (the trainer looks for plugins next to its
    config.toml); data files once into `data/`, named in run configs relative to the run
    folder; a local model folder is too big to copy and is written as an absolute path.
    So a campaign resumes from any working directory after the originals are gone.
    """
    config_dir = config_dir_of(campaign.source)
    files: dict[str, dict] = {}
    edits: dict[str, dict] = {}
    data_names: dict[Path, str] = {}
    for run in campaign.runs:
        cfg, run_dir, edit = run.config, root / RUNS / run.name, {}
        for src, name in _plugin_sources(cfg, config_dir):
            if src.is_dir():
                shutil.copytree(src, run_dir / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copyfile(src, run_dir / name)
            for copied in ([run_dir / name] if src.is_file() else sorted((run_dir / name).rglob("*"))):
                if copied.is_file():
                    rel = copied.relative_to(root).as_posix()
                    origin = src / copied.relative_to(run_dir / name) if src.is_dir() else src
                    files[rel] = {"kind": "plugin", "source": str(origin), "copy": rel,
                                  "sha256": _sha256(copied)}
        if cfg.data.source.startswith("jsonl:"):
            src = (config_dir / Path(cfg.data.source[len("jsonl:"):]).expanduser()).resolve()
            if src not in data_names:
                name = src.name if src.name not in data_names.values() else f"{len(data_names)}_{src.name}"
                (root / "data").mkdir(exist_ok=True)
                shutil.copyfile(src, root / "data" / name)
                data_names[src] = name
                files[f"data/{name}"] = {"kind": "data", "source": str(src), "copy": f"data/{name}",
                                         "sha256": _sha256(root / "data" / name)}
            edit["data"] = {"source": f"jsonl:../../data/{data_names[src]}"}
        model = local_model_path(cfg.model.model, config_dir)
        if model is not None:
            edit["model"] = {"model": str(model)}
        edits[run.name] = edit
    return edits, list(files.values())


def create_campaign_dir(campaign: Campaign, logs_dir: str | os.PathLike = "logs") -> Path:
    """Lay out `logs/campaign_<stamp>_<id>/` for `campaign` and return its path."""
    check_launchable(campaign)
    root = new_campaign_dir(Path(logs_dir))
    source = Path(campaign.source)
    shutil.copyfile(source, root / CAMPAIGN_TOML)
    for sub in (RUNS, THROTTLE, SQUEEZE):
        (root / sub).mkdir()
    (root / CONTROL).mkdir(mode=0o700)
    os.chmod(root / CONTROL, 0o700)  # mkdir's mode is masked by the umask

    max_concurrent = campaign.base.backend.max_concurrent
    throttle_dir = str((root / THROTTLE).resolve()) if max_concurrent > 0 else None
    runs = []
    for run in campaign.runs:
        (root / RUNS / run.name).mkdir()
    edits, files = bundle_run_files(campaign, root)
    for run in campaign.runs:
        run_dir = root / RUNS / run.name
        cfg = dataclasses.replace(
            run.config,
            backend=dataclasses.replace(run.config.backend, throttle_dir=throttle_dir),
            logging=dataclasses.replace(run.config.logging, log_dir=str(run_dir.resolve())),
        )
        for section, values in edits[run.name].items():
            setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **values))
        atomic_write_text(run_dir / "config.toml", config_to_toml(cfg))
        runs.append({"name": run.name, "condition": run.label, "seed": run.seed,
                     "advantage_mode": run.condition.advantage_mode,
                     "transform_mode": run.condition.transform_mode,
                     "overrides": run.condition.overrides, "max_steps": cfg.training.max_steps,
                     "dir": f"{RUNS}/{run.name}", "config": f"{RUNS}/{run.name}/config.toml"})

    settings = campaign.settings
    squeeze_cfg = campaign.base.squeeze
    # Unset keys as a file spells them (0 = automatic): manifest.json keeps its format.
    spelled, squeeze_spelled = toml_values(settings), toml_values(squeeze_cfg)
    manifest = {
        "campaign": root.name,
        "timestamp": now(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": str(source.resolve()),
        "config": CAMPAIGN_TOML,
        "cwd": os.getcwd(),  # where it was launched from (paths resolve against the TOML's folder)
        "files": files,  # plugin modules and data copied in: {"kind", "source", "copy", "sha256"}
        "conditions": [{"label": c.label, "advantage_mode": c.advantage_mode,
                        "transform_mode": c.transform_mode, "overrides": c.overrides}
                       for c in campaign.conditions],
        "seeds": list(dict.fromkeys(run.seed for run in campaign.runs)),
        "max_steps": runs[0]["max_steps"],
        "parallel": settings.parallel,
        "max_workers": spelled["max_workers"],  # 0: all runs
        "stagger_seconds": settings.stagger_seconds,
        "max_retries": settings.max_retries,
        # watched by the supervisor (supervisor/watch.py): stalls, rules, webhook
        "on_stall": settings.on_stall,
        "rules": settings.rules,
        "notify": {"webhook": campaign.base.notify.webhook},
        # GPU placement (docs/ARCHITECTURE.md): the pool as written and as found at creation
        "devices": campaign.base.backend.devices,
        "gpu_pool": [] if settings.launcher == "ray" else resolve_pool(campaign.base.backend.devices),
        "gpus_per_run": settings.gpus_per_run,
        "launcher": settings.launcher,  # "ray": runs are Ray actors (supervisor/ray_launcher.py)
        "ray_address": settings.ray_address,
        "grace_seconds": spelled["grace_seconds"],  # 0: max(30 s, 3 × the run's median step)
        "min_free_gb": settings.min_free_gb,  # supervisor/diskspace.py
        "max_concurrent": max_concurrent,
        "throttle": THROTTLE if throttle_dir else "",
        "model": campaign.base.model.model,
        "runs": runs,
        "squeeze": {"enabled": squeeze_requested(source),
                    "threshold": squeeze_cfg.min_variance_retention,
                    "target_ranks": list(squeeze_cfg.target_ranks),
                    "source_rank": squeeze_spelled["source_rank"],
                    "device": squeeze_cfg.device,
                    "wandb_project": campaign.base.logging.wandb_project,
                    "recommended_rank": None},
    }
    atomic_write_json(root / MANIFEST, manifest)
    state = {
        "campaign": root.name, "updated_at": now(),
        "supervisor": {"pid": None, "start_time": None, "heartbeat": None, "paused": False,
                       "pause_reason": "", "stopping": False},
        "runs": {r["name"]: initial_run_state() for r in runs},
        "squeeze": {"status": "pending" if manifest["squeeze"]["enabled"] else "none",
                    "error": "", "run": ""},
    }
    atomic_write_json(root / STATE, state)
    return root
