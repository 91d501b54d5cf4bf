"""`retrain tiny-model DIR`: build the offline tiny model (tokenizer + warm-started weights)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("directory", help="where to write the model (save_pretrained layout)")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty directory")


def main(args) -> int:
    from retrain_core.models.tiny import ensure_tiny_model

    out = Path(args.directory)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"retrain tiny-model: {out} is not empty (use --force to overwrite)", file=sys.stderr)
        return 2
    cached = ensure_tiny_model()  # built once per machine, then copied
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(cached, out, ignore=shutil.ignore_patterns("*.lock"))
    print(f"tiny model written to {out} (from cache {cached})")
    return 0
