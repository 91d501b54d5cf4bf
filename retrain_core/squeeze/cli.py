"""`retrain squeeze CONFIG.toml | ADAPTER_DIR`: analyse, recommend, optionally compress.

With a TOML file the [squeeze] table supplies the settings ([logging] the wandb project);
flags given on the command line override it. Exit codes: 0 done, 1 the adapter could not
be analysed or compressed, 2 a bad config or argument.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .adapter import SqueezeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a config TOML with a [squeeze] table, or an adapter "
                        "directory (adapter_model.safetensors + adapter_config.json)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="min mean retained variance for the recommendation (default 0.95)")
    parser.add_argument("--target-ranks", default=None, metavar="K,K,...",
                        help="ranks to evaluate (default: powers of two up to the source rank)")
    parser.add_argument("--source-rank", type=int, default=None,
                        help="expected source rank (default: detect)")
    parser.add_argument("--compress-to", type=int, default=None, metavar="K",
                        help="compress to rank K (0 = the recommended rank); needs --output")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="write the compressed adapter here")
    parser.add_argument("--device", default=None, help="torch device for the math (default cpu)")
    parser.add_argument("--json", action="store_true", help="print the analysis as JSON")
    parser.add_argument("--analysis-out", default=None, metavar="PATH",
                        help="also write the analysis JSON to PATH (atomically)")
    parser.add_argument("--wandb-project", default=None,
                        help="log a squeeze-analysis run (default: [logging].wandb_project "
                        "or WANDB_PROJECT)")
    parser.add_argument("--wandb-entity", default=None)


def _parse_ranks(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise SqueezeError(f"--target-ranks: expected comma-separated integers, found {text!r}") from exc


def _settings(args: argparse.Namespace) -> dict:
    """Merge the [squeeze]/[logging] tables of a config (if given) with the flags."""
    from retrain_core.config.schema import LoggingConfig, SqueezeConfig

    target = Path(args.target)
    squeeze, logging = SqueezeConfig(), LoggingConfig()
    if target.is_file() and target.suffix == ".toml":
        from retrain_core.config import load_config

        config = load_config(target)
        squeeze, logging = config.squeeze, config.logging
        if not squeeze.adapter_path:
            raise SqueezeError(f"{target}: [squeeze].adapter_path is empty: which adapter?")
        adapter = Path(squeeze.adapter_path)
        # Relative paths: from the current directory, else from the config's directory.
        if not adapter.is_absolute() and not adapter.exists():
            adapter = target.parent / adapter
    else:
        adapter = target

    def pick(flag, value):
        return value if flag is None else flag

    compress_to = pick(args.compress_to, squeeze.compress_to)
    output = pick(args.output, squeeze.output_path)
    if args.compress_to is not None and not output:
        raise SqueezeError("--compress-to needs --output DIR (or [squeeze].output_path)")
    ranks = _parse_ranks(args.target_ranks) if args.target_ranks is not None else squeeze.target_ranks
    return {
        "adapter": adapter,
        "threshold": pick(args.threshold, squeeze.min_variance_retention),
        "target_ranks": ranks or None,
        "source_rank": pick(args.source_rank, squeeze.source_rank),
        "device": pick(args.device, squeeze.device),
        "compress_to": compress_to,
        "output": output,
        "wandb_project": args.wandb_project or logging.wandb_project,
        "wandb_entity": args.wandb_entity or logging.wandb_entity,
        "wandb_group": logging.wandb_group,
    }


def main(args: argparse.Namespace) -> int:
    from retrain_core.config import ConfigError

    try:
        settings = _settings(args)
    except (ConfigError, SqueezeError) as exc:
        print(f"retrain squeeze: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args, settings)
    except SqueezeError as exc:
        print(f"retrain squeeze: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: dict) -> int:
    from .analysis import analyze_adapter, render_table
    from .compress import compress_adapter
    from .report import log_to_wandb, wandb_project_for, write_analysis_json

    # A 4B model's rank-128 adapter is ~1 GB of weights: say what is happening meanwhile
    # (on stderr, so --json output stays one document).
    started = time.monotonic()
    print(f"retrain squeeze: analysing {settings['adapter']} ({_size_mb(settings['adapter']):.0f} MB) …",
          file=sys.stderr, flush=True)
    analysis = analyze_adapter(settings["adapter"], min_variance_retention=settings["threshold"],
                               target_ranks=settings["target_ranks"],
                               source_rank=settings["source_rank"], device=settings["device"])
    print(f"retrain squeeze: {analysis.num_layers} modules analysed in "
          f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    # With --json stdout carries only the JSON document; messages go to stderr.
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    if args.analysis_out:
        write_analysis_json(analysis, args.analysis_out)
    report = analysis.to_dict()
    if settings["output"]:
        rank = settings["compress_to"] or analysis.recommended_rank
        print(f"retrain squeeze: compressing to rank {rank} into {settings['output']} …",
              file=sys.stderr, flush=True)
        out = compress_adapter(settings["adapter"], rank, settings["output"],
                               device=settings["device"])
        report["compressed"] = {"rank": rank, "path": str(out)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        say(render_table(analysis))
    if "compressed" in report:
        say(f"compressed to rank {report['compressed']['rank']}: {report['compressed']['path']}")
    project = wandb_project_for(settings["wandb_project"])
    if project:
        try:
            run_dir = log_to_wandb(analysis, project, entity=settings["wandb_entity"],
                                   group=settings["wandb_group"])
            say(f"wandb: squeeze-analysis run logged ({run_dir})")
        except Exception as exc:  # noqa: BLE001 - the analysis succeeded; wandb is a side channel
            print(f"retrain squeeze: warning: wandb logging failed: {exc}", file=sys.stderr)
    return 0


def _size_mb(path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else list(path.glob("*.safetensors")) + list(path.glob("*.bin"))
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20
