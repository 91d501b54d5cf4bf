"""Export the README screenshots (SVG, by Textual): the editor on configs/demo.toml and
the monitor on a fabricated campaign, 100×30, with a frozen clock.

usage: .venv/bin/python tools/screenshots.py [OUT_DIR]   (default docs/screenshots)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.support, when run as a script

from retrain_tui.app import RetrainApp
from tests.support.campaigns import FIXED_TIME, demo_workdir

SIZE = (100, 30)
CONDITIONS = ("grpo+none", "maxrl+none", "maxrl+gtpo", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa")


async def _shoot(app: RetrainApp, path: Path, keys: tuple[str, ...] = ()) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        if hasattr(app.screen, "refresh_now"):
            app.screen.refresh_now()
        for key in keys:
            await pilot.press(key)
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        app.save_screenshot(filename=path.name, path=str(path.parent))


async def export(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        statuses = {f"{c}_s{s}": st for c, st in zip(CONDITIONS, (
            "succeeded", "running", "running", "failed", "pending")) for s in (42, 101)}
        steps = {f"{c}_s{s}": n if n in (0, 30) else n + s % 3
                 for c, n in zip(CONDITIONS, (30, 22, 17, 6, 0))
                 for s in (42, 101)}
        directory = demo_workdir(work, (REPO / "configs" / "demo.toml").read_text(),
                                 conditions=CONDITIONS, seeds=(42, 101), steps=steps,
                                 statuses=statuses)
        os.chdir(work)
        try:
            shots = [(Path("configs/demo.toml"), "editor.svg", ()),
                     (directory, "monitor.svg", ()),
                     (directory, "squeeze.svg", ("S",))]
            done = []
            for target, name, keys in shots:
                app = RetrainApp(target, logs_dir=Path("logs"), clock=lambda: FIXED_TIME + 754,
                                 start_watchers=False)
                await _shoot(app, out_dir / name, keys)
                done.append(out_dir / name)
        finally:
            os.chdir(cwd)
    return done


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "docs/screenshots").resolve()
    for path in asyncio.run(export(out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
