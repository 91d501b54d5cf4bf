"""`retrain explain CONFIG`: the run matrix, per-condition settings and capacity estimate.

Exit 0 on a valid config, 2 when the config has problems (each printed to stderr as
`FILE:LINE: KEY: message`). `--json` prints one object (documented in the README,
`"schema": 1`) on stdout, also for problems (`"ok": false`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .config.campaign import Campaign, launch_notes, launch_problems, load_campaign
from .config.defaults import filled_defaults
from .config.errors import ConfigError
from .config.schema import toml_values
from .plan import estimate, format_hours

JSON_SCHEMA_VERSION = 1
SHOWN_IN_LABEL = {"algorithm.advantage_mode", "algorithm.transform_mode"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="campaign or single-run TOML file")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    parser.add_argument("--gpu", choices=["h100", "a100", "4090", "cpu"],
                        help="use this step-time preset (scaled by the token budget); without "
                             "it, pilots, then this machine's GPU, or cpu when it has none")
    parser.add_argument("--step-time", type=float, metavar="S", dest="step_time",
                        help="median seconds per step to plan with (beats --gpu and pilots)")
    parser.add_argument("--logs-dir", default="logs", metavar="DIR",
                        help="where to look for pilot runs' metrics.jsonl (default: logs)")


def flatten_config(cfg) -> dict[str, Any]:
    """{"sepa.steps": 500, ...} over every key of a resolved config."""
    return {f"{section}.{key}": value for section, table in cfg.to_dict().items()
            for key, value in table.items()}


def condition_differences(campaign: Campaign) -> dict[str, dict[str, dict[str, Any]]]:
    """Per label, the resolved keys whose value differs from the base config (seed aside)."""
    base = flatten_config(campaign.base)
    if campaign.settings.max_steps is not None:  # every run's default, not a difference
        base["training.max_steps"] = campaign.settings.max_steps
    seen: dict[str, dict[str, dict[str, Any]]] = {}
    for run in campaign.runs:
        if run.label in seen:
            continue
        resolved = flatten_config(run.config)
        seen[run.label] = {key: {"value": value, "base": base[key]}
                           for key, value in resolved.items()
                           if key != "training.seed" and value != base[key]}
    return seen


def explain_dict(campaign: Campaign, est) -> dict[str, Any]:
    """The stable `--json` object."""
    differences = condition_differences(campaign)
    settings = toml_values(campaign.settings)  # as the file spells them: max_workers 0 = all
    return {
        "schema": JSON_SCHEMA_VERSION,
        "ok": True,
        "source": str(campaign.source),
        "is_campaign": campaign.is_campaign,
        "counts": {"conditions": len(campaign.conditions), "seeds": len(settings["seeds"]),
                   "runs": len(campaign.runs), "total_steps": est.total_steps},
        "settings": {key: settings[key] for key in ("seeds", "max_steps", "parallel",
                                                    "max_workers", "stagger_seconds",
                                                    "max_retries")},
        "conditions": [
            {"label": c.label, "advantage_mode": c.advantage_mode,
             "transform_mode": c.transform_mode, "overrides": c.overrides, "line": c.line,
             "differs_from_base": differences.get(c.label, {}),
             "runs": [r.name for r in campaign.runs if r.label == c.label]}
            for c in campaign.conditions],
        "runs": [{"name": r.name, "label": r.label, "seed": r.seed,
                  "max_steps": r.config.training.max_steps} for r in campaign.runs],
        "base": campaign.base.to_dict(),
        "estimate": est.to_dict(),
        "launch_problems": [p.to_dict() for p in launch_problems(campaign)],
        "launch_notes": launch_notes(campaign),  # e.g. a hub model that will be downloaded
        "defaults": filled_defaults(campaign, read_raw(campaign)),  # gaps the defaults fill
    }


def read_raw(campaign: Campaign) -> dict:
    """The campaign file as plain TOML (empty when it cannot be read again)."""
    import tomllib

    try:
        return tomllib.loads(campaign.source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def render_text(campaign: Campaign, est) -> str:
    settings, base = campaign.settings, campaign.base
    n_cond, n_seeds, n_runs = len(campaign.conditions), len(settings.seeds), len(campaign.runs)
    lines = []
    kind = "campaign" if campaign.is_campaign else "single run (no [campaign] table)"
    lines.append(f"{campaign.source}: {kind}")
    lines.append(f"  {n_cond} condition{'s' * (n_cond != 1)} × {n_seeds} seed{'s' * (n_seeds != 1)}"
                 f" = {n_runs} run{'s' * (n_runs != 1)}, {est.total_steps:,} steps")
    steps_from = ("[campaign].max_steps" if settings.max_steps is not None
                  else "[training].max_steps")
    for note in filled_defaults(campaign, read_raw(campaign)):
        lines.append(f"  default: {note}")
    lines.append(f"  model {base.model.model} · backend {base.backend.backend} · "
                 f"engine {base.inference.engine} · "
                 f"{base.training.max_steps if settings.max_steps is None else settings.max_steps}"
                 f" steps per run (from {steps_from})")
    if campaign.is_campaign:
        mode = (f"parallel, max_workers {settings.max_workers or 'all'}" if settings.parallel
                else "sequential")
        lines.append(f"  seeds {', '.join(map(str, settings.seeds))} · {mode} · "
                     f"stagger {settings.stagger_seconds:g} s · max_retries {settings.max_retries}")
    lines += ["", "Run matrix"]
    differences = condition_differences(campaign)
    for index, condition in enumerate(campaign.conditions, start=1):
        lines.append(f"  {index}. {condition.label}")
        names = [r.name for r in campaign.runs if r.label == condition.label]
        lines.append("       runs: " + ", ".join(names))
        diff = differences.get(condition.label, {})
        for key in sorted(set(diff) - SHOWN_IN_LABEL):
            lines.append(f"       {key} = {_show(diff[key]['value'])}  (base {_show(diff[key]['base'])})")
    lines += ["", "Capacity estimate"]
    per_run = {r.config.training.max_steps for r in campaign.runs}
    steps = f"{per_run.pop():,} steps" if len(per_run) == 1 else "steps"
    lines.append(f"  {est.runs} run{'s' * (est.runs != 1)} × {steps} = {est.total_steps:,} steps · "
                 f"{est.completions_per_step:,} completions per step · "
                 f"≤ {est.token_budget_per_step:,} tokens per step")
    if campaign.is_campaign:
        lines.append(f"  parallelism: {est.effective_parallelism} run"
                     f"{'s' * (est.effective_parallelism != 1)} at once, bound by "
                     f"{est.parallelism_bound} ({est.parallelism_detail})")
    if est.median_step_time_s is None:
        lines.append(f"  step time: unknown ({est.detail})")
    else:
        lines.append(f"  step time: {est.median_step_time_s:.3g} s [{est.step_time_source}] {est.detail}")
        for path in est.pilot_files[:5]:
            lines.append(f"    pilot: {path}")
        lines.append(f"  sequential: {format_hours(est.sequential_hours)}")
        workers = est.effective_parallelism
        stagger = f" (+{est.stagger:g} s stagger)" if est.stagger else ""
        lines.append(f"  wall time: {format_hours(est.wall_hours)} with {workers} "
                     f"worker{'s' * (workers != 1)}{stagger}")
    for problem in launch_problems(campaign):
        lines += ["", f"Note: {problem}"]
    for note in launch_notes(campaign):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    try:
        campaign = load_campaign(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if args.json:
            print(json.dumps({"schema": JSON_SCHEMA_VERSION, "ok": False, "source": args.config,
                              "problems": [p.to_dict() for p in exc.problems]}, indent=2))
        return 2
    if args.step_time is not None and not args.step_time > 0:
        print(f"--step-time: expected a positive number of seconds, found {args.step_time}",
              file=sys.stderr)
        return 2
    est = estimate(campaign, gpu=args.gpu, step_time_s=args.step_time, logs_dir=args.logs_dir,
                   detect=True)
    try:
        if args.json:
            print(json.dumps(explain_dict(campaign, est), indent=2))
        else:
            print(render_text(campaign, est))
        sys.stdout.flush()
    except BrokenPipeError:  # `retrain explain ... | head`
        sys.stderr.close()
    return 0
