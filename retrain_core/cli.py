"""The `retrain` command.

Each subcommand lives in its own module, imported only when that subcommand runs, so
`retrain status` never pays for importing torch. A command module exposes
`add_arguments(parser)` and `main(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("retrain_core.train.cli", "train one run from a config TOML"),
    "campaign": ("retrain_core.supervisor.cli_campaign", "launch or resume a campaign (detached supervisor)"),
    "explain": ("retrain_core.explain", "show the run matrix, resolved settings and capacity estimate"),
    "status": ("retrain_core.supervisor.cli_status", "show campaigns and runs"),
    "kill": ("retrain_core.supervisor.cli_control", "kill one run of a campaign"),
    "restart": ("retrain_core.supervisor.cli_control", "restart one run of a campaign from its checkpoint"),
    "stop": ("retrain_core.supervisor.cli_control", "stop a campaign (kill all runs, keep everything on disk)"),
    "pause": ("retrain_core.supervisor.cli_control", "pause launching new runs"),
    "unpause": ("retrain_core.supervisor.cli_control", "resume launching new runs"),
    "compare": ("retrain_core.compare_cli", "compare conditions across seeds (paired, with intervals)"),
    "export": ("retrain_core.export", "serve Prometheus /metrics and JSON /v1/runs on 127.0.0.1 (read-only)"),
    "squeeze": ("retrain_core.squeeze.cli", "analyse and compress a LoRA adapter"),
    "models": ("retrain_core.models.cli", "list the built-in models or rebuild one from its recipe"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrain", description="RL fine-tuning campaigns.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        # Only the chosen command's module is imported: heavy deps stay out of the others.
        if name == chosen:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.main(args) or 0)
    except BrokenPipeError:
        # `retrain status --json | head`: the reader left; exit quietly like other unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
