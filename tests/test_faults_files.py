"""Issue #11 items 3 and 4: odd values in metrics and corrupt or missing campaign files.

`retrain status` runs as a real subprocess and the monitor as a real Textual app; the
campaign directories are fabricated (the layout of docs/ARCHITECTURE.md) and then damaged the way a user,
a full disk or a diverged run would damage them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_sup_helpers import fake_env, retrain

from retrain_tui.app import RetrainApp
from retrain_tui.screens.monitor import MonitorScreen
from tests.support.campaigns import make_campaign

ODD_LINES = [
    '{"step": 0, "mean_reward": NaN, "correct_rate": Infinity, "loss": -Infinity, "step_time_s": 1.0}',
    '{"step": 1, "mean_reward": 1e999, "correct_rate": 0.5, "loss": 1e308, "step_time_s": 1e308}',
    '{"step": 2, "mean_reward": 0.5, "correct_rate": 0.5, "loss": 1' + "0" * 400
    + ', "step_time_s": 1e308, "time": NaN}',
]


def odd_campaign(tmp_path: Path) -> Path:
    directory = make_campaign(tmp_path, steps={"grpo+none_s42": 2},
                              statuses={"grpo+none_s42": "running", "grpo+none_s101": "running"})
    for run in ("grpo+none_s42", "grpo+none_s101"):
        with open(directory / "runs" / run / "metrics.jsonl", "a") as fh:
            fh.write("\n".join(ODD_LINES) + "\n")
    return directory


def status_json(tmp_path: Path, target: Path) -> tuple[int, dict, str]:
    res = retrain(["status", target, "--json"], fake_env(tmp_path), tmp_path)
    assert "Traceback" not in res.stderr, res.stderr
    # strict JSON: Python's parser would accept NaN/Infinity, so reject them explicitly
    out = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))
    return res.returncode, out, res.stderr


def test_odd_metric_values_never_crash_status(tmp_path):
    directory = odd_campaign(tmp_path)
    code, out, _ = status_json(tmp_path, directory)
    assert code == 0
    run = next(r for r in out["campaigns"][0]["runs"] if r["name"] == "grpo+none_s42")
    assert run["step"] == 3  # the odd lines still count as steps
    assert run["metrics"]["loss"] is None and run["metrics"]["mean_reward"] == 0.5
    assert run["eta_s"] is None  # 1e308 s per step overflows: no ETA, not "inf"
    text = retrain(["status", directory], fake_env(tmp_path), tmp_path)
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    assert "grpo+none_s42" in text.stdout and "3/30" in text.stdout


def test_odd_metric_values_never_crash_the_monitor(tmp_path):
    directory = odd_campaign(tmp_path)

    async def drive() -> None:
        app = RetrainApp(directory, strict=True, poll_interval=0.1)
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(600):
                if isinstance(app.screen, MonitorScreen) or app.screen_stack[-2:-1]:
                    break
                await pilot.pause(0.05)
            monitor = next(s for s in app.screen_stack if isinstance(s, MonitorScreen))
            for _ in range(600):
                snap = monitor.snapshot
                if snap and snap.run("grpo+none_s101") and snap.run("grpo+none_s101").step == 3:
                    break
                await pilot.pause(0.05)
            row = monitor.snapshot.run("grpo+none_s101")
            assert row.step == 3
            await pilot.pause(0.3)  # a few more polls and renders with the odd values
            await pilot.press("ctrl+q")
        assert app.return_code in (0, None)

    asyncio.run(drive())


CORRUPTIONS = {
    "manifest is a list": ("manifest.json", "[1, 2]", "expected a JSON object, found a list"),
    "run without name": ("manifest.json", None, "has no usable \"name\""),
    "runs null": ("manifest.json", None, "\"runs\" must be a list of runs, found null"),
    "empty state": ("state.json", "", "state.json: empty"),
    "garbage state": ("state.json", "{\"runs\": {\"a\"", "state.json: not valid JSON"),
    "deleted state": ("state.json", None, "state.json: missing"),
    "unknown status": ("state.json", None, "unknown status 'exploded'"),
}


def corrupt(directory: Path, case: str) -> None:
    name, text, _ = CORRUPTIONS[case]
    path = directory / name
    if case == "run without name":
        data = json.loads(path.read_text())
        del data["runs"][1]["name"]
        text = json.dumps(data)
    elif case == "runs null":
        data = json.loads(path.read_text())
        data["runs"] = None
        text = json.dumps(data)
    elif case == "deleted state":
        path.unlink()
        return
    elif case == "unknown status":
        data = json.loads(path.read_text())
        data["runs"]["grpo+none_s101"]["status"] = "exploded"
        text = json.dumps(data)
    path.write_text(text)


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_campaign_files_are_named_by_status(tmp_path, case):
    directory = make_campaign(tmp_path / "logs", steps={"grpo+none_s42": 2})
    healthy = make_campaign(tmp_path / "logs", name="campaign_20250101_000000_good")
    corrupt(directory, case)
    code, out, _ = status_json(tmp_path, tmp_path / "logs")
    assert code == 1
    by_name = {Path(c["dir"]).name: c for c in out["campaigns"]}
    expected = CORRUPTIONS[case][2]
    assert any(expected in p for p in by_name[directory.name]["problems"]), by_name[directory.name]
    assert by_name[healthy.name]["problems"] == []  # one bad campaign spoils nothing else
    text = retrain(["status", tmp_path / "logs"], fake_env(tmp_path), tmp_path)
    assert text.returncode == 1 and "Traceback" not in text.stderr, text.stderr
    assert expected in text.stdout and healthy.name in text.stdout


@pytest.mark.parametrize("case", ["manifest is a list", "runs null", "garbage state"])
def test_corrupt_campaign_files_are_named_by_the_monitor(tmp_path, case):
    directory = make_campaign(tmp_path, steps={"grpo+none_s42": 2})
    corrupt(directory, case)
    expected = CORRUPTIONS[case][2]

    async def drive() -> None:
        app = RetrainApp(directory, strict=True, poll_interval=0.1)
        notes: list[str] = []
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(1200):
                notes = [str(n.message) for n in app._notifications]
                if any(expected in n for n in notes):
                    break
                await pilot.pause(0.05)
            await pilot.press("ctrl+q")
        assert any(expected in n for n in notes), notes

    asyncio.run(drive())
