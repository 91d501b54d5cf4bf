"""The CPU preset of the plan panel and `retrain explain`, measured on the demo itself.

Runs the demo campaign (configs/demo.toml: builtin:tiny-arith, B=4, G=8, max_tokens=40,
two runs at a time, one throttle slot) with the real supervisor and trainer, `--steps`
steps per run, and prints
- the median step time over every run's steps (each run's first step, which warms up,
  left out): what `retrain_core.plan.CPU_PRESET_S` holds, measured on an idle box;
- the campaign's wall time next to what the plan predicts from that step time
  (steps × step time ÷ runs at once + stagger), so the two can be compared;
- the load average before and after: step times scale with load, quote them together.

usage: .venv/bin/python bench/cpu_preset.py [--steps 10] [--config configs/demo.toml]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    from retrain_core.config import load_campaign
    from retrain_core.plan import estimate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per run")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cpu-preset-") as tmp:
        config = Path(tmp) / "demo.toml"
        text = args.config.read_text()
        config.write_text(text.replace("max_steps = 30", f"max_steps = {args.steps}", 1))
        campaign = load_campaign(config)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "retrain_core.cli", "campaign", str(config),
                        "--logs-dir", str(Path(tmp) / "logs"), "--foreground"],
                       check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - started
        times = []
        for metrics in sorted(Path(tmp, "logs").glob("*/runs/*/metrics.jsonl")):
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
            times += [r["step_time_s"] for r in rows if r.get("step", 0) > 0
                      and not r.get("skipped") and r.get("step_time_s")]
    median = statistics.median(times)
    plan = estimate(campaign, step_time_s=median)
    print(f"median step time {median:.2f} s over {len(times)} steps of {plan.runs} runs "
          f"({plan.effective_parallelism} at a time)")
    print(f"campaign wall time {wall:.0f} s; the plan with that step time says "
          f"{plan.wall_hours * 3600:.0f} s")
    print(f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
