"""`retrain models list | build`: the built-in models.

`list` says where each built-in model is and how it was built. `build tiny-arith --out DIR`
reruns the recipe that made the shipped files (a minute on 2 idle cores, with a progress
bar); `--steps N` runs a shorter schedule (what the determinism test does).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

BUILDABLE = ("tiny-arith",)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="show the built-in models, where they are and how they were built")
    build = sub.add_parser("build", help="rebuild a built-in model from its recipe into a folder")
    build.add_argument("name", choices=BUILDABLE, help="which built-in model")
    build.add_argument("--out", required=True, help="folder to write (save_pretrained layout)")
    build.add_argument("--steps", type=int, default=None,
                       help="warm-start steps (default: the shipped recipe's)")
    build.add_argument("--force", action="store_true", help="replace a non-empty folder")


def main(args) -> int:
    if args.models_command == "list":
        return _list()
    return _build(args)


def _list() -> int:
    from retrain_core.models.tiny import BUILTIN_NAME, SHIPPED_DIR

    info_path = SHIPPED_DIR / "BUILD_INFO.json"
    try:
        info = json.loads(info_path.read_text())
        how = (f"{info['model_version']}, {info['recipe']['warm_steps']} warm-start steps, "
               f"torch {info['torch']}")
    except (OSError, ValueError, KeyError) as exc:
        how = f"build record unreadable ({info_path}: {exc})"
    print(f"{BUILTIN_NAME}  {SHIPPED_DIR}  ({how})")
    return 0


def _build(args) -> int:
    from retrain_core.models.tiny import WARM_STEPS, build_tiny_model

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        print(f"retrain models build: {out} is not empty (use --force to replace it)",
              file=sys.stderr)
        return 2
    steps = WARM_STEPS if args.steps is None else args.steps
    if steps < 1:
        print(f"retrain models build: --steps must be at least 1 (got {steps})", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"building {args.name} ({steps} warm-start steps) into {out}", file=sys.stderr)
    # Build beside the target and swap it in, so an interrupted build leaves no half model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        build_tiny_model(tmp, steps=steps, progress=True)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.name} written to {out}")
    return 0
