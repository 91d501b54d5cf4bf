"""`retrain run CONFIG [--run-dir DIR] [--run-name NAME] [--condition LABEL] [--resume RUN_DIR]`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from retrain_core.train import EXIT_CONFIG_ERROR

RUN_ID_ENV = "RETRAIN_RUN_ID"  # set by the supervisor's launcher; its wrapper writes exit.json


def add_arguments(parser) -> None:
    parser.add_argument("config", help="run or campaign TOML")
    parser.add_argument("--run-dir", help="output directory (default: [logging].log_dir/RUN_NAME)")
    parser.add_argument("--run-name", help="run name; in a campaign file it selects the run (e.g. grpo+none_s42)")
    parser.add_argument("--condition", help="condition label (e.g. maxrl+gtpo_sepa); selects the condition of a campaign file")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue from the latest checkpoint of RUN_DIR")
    parser.add_argument("--max-steps", type=int, help="override [training].max_steps")
    parser.add_argument("--quiet", action="store_true", help="no per-step console line")


def select_run(camp, run_name: str | None, condition: str | None):
    """(config, label, run name) for the requested run of a campaign or single-run file."""
    runs = camp.runs
    if run_name:
        for run in runs:
            if run.name == run_name:
                return run.config, run.label, run.name
    if condition:
        matching = [r for r in runs if r.label == condition]
        if not matching:
            labels = ", ".join(sorted({r.label for r in runs}))
            raise ValueError(f"--condition {condition!r} is not a condition of {camp.source} (have: {labels})")
        run = matching[0]
        return run.config, run.label, run_name or run.name
    if len(runs) == 1:
        run = runs[0]
        return run.config, run.label, run_name or run.name
    names = ", ".join(r.name for r in runs[:6]) + (" …" if len(runs) > 6 else "")
    what = f"has no run named {run_name!r}" if run_name else f"is a campaign with {len(runs)} runs"
    raise ValueError(f"{camp.source} {what}: pick one with --run-name ({names}) or --condition")


def main(args) -> int:
    from retrain_core.config import ConfigError, load_campaign
    from retrain_core.train.vllm_engine import VllmError

    standalone = RUN_ID_ENV not in os.environ
    try:
        camp = load_campaign(args.config)
        cfg, label, run_name = select_run(camp, args.run_name, args.condition)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"retrain run: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.max_steps is not None:
        cfg.training.max_steps = args.max_steps
    from retrain_core.registry import REGISTRY

    reason = REGISTRY.unavailable_reason("backend", cfg.backend.backend, cfg)
    if reason:  # before any output is written: nothing to clean up
        from retrain_core.train.backend import BackendUnavailable

        print(f"retrain run: {BackendUnavailable(cfg.backend.backend, reason)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    run_dir = Path(args.run_dir or args.resume or Path(cfg.logging.log_dir) / run_name)
    run_dir.mkdir(parents=True, exist_ok=True)
    if standalone:
        from retrain_core.train.metrics import tee_std_streams

        tee_std_streams(run_dir)
    code = 1
    try:
        code = _train(cfg, run_dir, run_name, label, Path(args.config).resolve().parent, args)
        return code
    except (ValueError, FileNotFoundError) as exc:  # data/reward/model problems found at start
        print(f"retrain run: {exc}", file=sys.stderr)
        _record_error(run_dir, exc)
        code = EXIT_CONFIG_ERROR
        return code
    except VllmError as exc:  # the engine's own message says what and where (its log's tail)
        print(f"retrain run: {exc}", file=sys.stderr)
        _record_error(run_dir, exc)
        return code
    except Exception as exc:
        _record_error(run_dir, exc)  # error.json: what status, the TUI and the breaker show
        raise
    finally:
        if standalone:
            from retrain_core.train.checkpoint import atomic_write_json

            atomic_write_json(run_dir / "exit.json", {"returncode": code, "signal": None,
                                                      "ended_at": time.time(), "standalone": True})


def _record_error(run_dir: Path, exc: BaseException) -> None:
    from retrain_core.error_record import write_error

    write_error(run_dir, exc)


def _train(cfg, run_dir: Path, run_name: str, label: str, config_dir: Path, args) -> int:
    from retrain_core.train.loop import StopFlag, Trainer

    stop = StopFlag()
    stop.install()  # before loading the model: a SIGTERM during start-up still stops cleanly
    try:
        trainer = Trainer(cfg, run_dir, run_name, label, config_dir=config_dir, quiet=args.quiet)
        resume = Path(args.resume) if args.resume else None
        return trainer.run(resume_from=resume, stop=stop)
    finally:
        stop.uninstall()
