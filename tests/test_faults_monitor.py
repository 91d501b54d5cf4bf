"""Issue #11 item 7: the monitor after a resume.

A resumed trainer rewrites `metrics.jsonl` up to its checkpoint (a new file, renamed over
the old one) and appends the redone steps. The watcher must rebuild that run's history
from the new file instead of appending to it (steps 0..9 then 0..7: a zigzag plot).
The rewrite is done by the trainer's own code (`checkpoint.truncate_jsonl`) in a separate
process, the way a resumed run does it.
"""

from __future__ import annotations

import json
import subprocess
import sys

from test_sup_helpers import REPO

from retrain_tui.watcher import CampaignWatcher
from tests.support.campaigns import make_campaign, metric_line

RUN, CONDITION, SEED = "grpo+none_s42", "grpo+none", 42


def resume_rewrite(path, keep_before: int, redo: range) -> None:
    code = ("import json, sys\n"
            "from pathlib import Path\n"
            "from retrain_core.train.checkpoint import truncate_jsonl\n"
            "path = Path(sys.argv[1])\n"
            "truncate_jsonl(path, int(sys.argv[2]))\n"
            "with open(path, 'a') as f:\n"
            "    f.write(sys.stdin.read())\n")
    lines = "".join(json.dumps(dict(metric_line(RUN, CONDITION, SEED, s), mean_reward=0.9))
                    + "\n" for s in redo)
    subprocess.run([sys.executable, "-c", code, str(path), str(keep_before)], input=lines,
                   text=True, check=True, cwd=REPO, timeout=120)


def steps(watcher: CampaignWatcher, metric: str = "mean_reward") -> list[int]:
    return [s for s, _ in watcher.run_history(RUN)[metric]]


def test_history_is_rebuilt_when_metrics_are_replaced_on_resume(tmp_path):
    directory = make_campaign(tmp_path, steps={RUN: 10}, statuses={RUN: "running"})
    watcher = CampaignWatcher(directory)
    watcher.poll_once()
    assert steps(watcher) == list(range(10))

    # killed after step 9, resumed from the checkpoint of step 8: 0..7 kept, 8..11 redone
    resume_rewrite(directory / "runs" / RUN / "metrics.jsonl", 8, range(8, 12))
    snap = watcher.poll_once()
    assert steps(watcher) == list(range(12))  # once each, in order: no zigzag
    assert [v for s, v in watcher.run_history(RUN)["mean_reward"] if s >= 8] == [0.9] * 4
    plot_steps, _ = snap.plot_series[CONDITION]
    assert plot_steps == sorted(set(plot_steps)) and plot_steps[-1] == 11
    row = snap.run(RUN)
    assert row.step == 12 and row.metrics["mean_reward"] == 0.9


def test_a_poll_between_rewrite_and_redo_drops_the_undone_steps(tmp_path):
    directory = make_campaign(tmp_path, steps={RUN: 10}, statuses={RUN: "running"})
    watcher = CampaignWatcher(directory)
    watcher.poll_once()
    resume_rewrite(directory / "runs" / RUN / "metrics.jsonl", 6, range(0))
    snap = watcher.poll_once()
    assert steps(watcher) == list(range(6)) and snap.run(RUN).step == 6
    assert max(snap.plot_series[CONDITION][0]) == 5  # steps 6..9 left the plot too
    resume_rewrite(directory / "runs" / RUN / "metrics.jsonl", 6, range(6, 9))
    watcher.poll_once()
    assert steps(watcher) == list(range(9))
