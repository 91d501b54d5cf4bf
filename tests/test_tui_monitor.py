"""Pilot tests of the monitor, run detail, squeeze panel, help and picker against
fabricated campaign directories (the files a supervisor writes; no supervisor process)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from waits import edit_field, wait_for, wait_until

from retrain_core.config import config_to_toml, load_campaign
from retrain_tui.app import RetrainApp
from retrain_tui.screens.monitor import MonitorScreen
from retrain_tui.watcher import CampaignWatcher
from tests.support.campaigns import (
    FIXED_TIME,
    SQUEEZE_ANALYSIS,
    append_metrics,
    make_campaign,
    write_json,
    write_state,
)

REPO = Path(__file__).resolve().parent.parent
SIZE = (100, 30)
RUNNING = {"grpo+none_s42": "running", "grpo+none_s101": "running",
           "maxrl+gtpo_sepa_s42": "succeeded", "maxrl+gtpo_sepa_s101": "pending"}


def append_text(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def cell(screen, run: str, column: str) -> str:
    return str(screen.query_one("#runs-table").get_cell(run, column))


def table_text(screen) -> list[list[str]]:
    table = screen.query_one("#runs-table")
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def dismiss_resume_offer(pilot) -> None:
    """No supervisor runs behind a fabricated campaign: decline the resume offer."""
    await wait_for(pilot, lambda: not isinstance(pilot.app.screen, MonitorScreen))
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, MonitorScreen))


async def test_rows_update_as_metrics_are_appended(tmp_path: Path) -> None:
    directory = make_campaign(tmp_path, steps={"grpo+none_s42": 3, "grpo+none_s101": 2,
                                               "maxrl+gtpo_sepa_s42": 30}, statuses=RUNNING)
    app = RetrainApp(directory, strict=True, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await dismiss_resume_offer(pilot)
        screen = app.screen
        await wait_for(pilot, lambda: "3/30" in cell(screen, "grpo+none_s42", "progress"))
        assert cell(screen, "grpo+none_s42", "status") == "running"
        assert "supervisor gone" in str(screen.query_one("#campaign-header").render())
        append_metrics(directory, "grpo+none_s42", "grpo+none", 42, 3, 5)
        await wait_for(pilot, lambda: "8/30" in cell(screen, "grpo+none_s42", "progress"))
        snap = screen.snapshot
        row = snap.run("grpo+none_s42")
        assert row.step == 8 and row.metrics["mean_reward"] > 0
        assert cell(screen, "grpo+none_s42", "mean_reward") == f"{row.metrics['mean_reward']:.3f}"
        # condition aggregate over both seeds of grpo+none: mean ± CI of the latest values
        agg = next(c for c in snap.conditions if c.label == "grpo+none")
        assert agg.seeds == 2 and agg.steps_done == 10 and agg.steps_total == 60
        latest = [snap.run(n).metrics["correct_rate"] for n in ("grpo+none_s42", "grpo+none_s101")]
        assert abs(agg.correct[0] - sum(latest) / 2) < 1e-9 and agg.correct[1] > 0
        steps, values = snap.plot_series["grpo+none"]
        assert steps == list(range(8)) and len(values) == 8
        # a partial line is not shown until its newline arrives
        append_text(directory / "runs" / "grpo+none_s42" / "metrics.jsonl",
                    '{"step": 8, "mean_reward"')
        await pilot.pause(0.4)
        assert screen.snapshot.run("grpo+none_s42").step == 8


async def test_failed_run_raises_a_notification(tmp_path: Path) -> None:
    directory = make_campaign(tmp_path, steps={"grpo+none_s42": 3}, statuses=RUNNING)
    app = RetrainApp(directory, strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.refresh_now()
        await pilot.press("n")  # read-only
        write_state(directory, {**RUNNING, "grpo+none_s42": "failed"})
        screen.refresh_now()
        await pilot.pause()
        failed = [n for n in app._notifications if "grpo+none_s42 failed" in n.message]
        assert failed and failed[0].severity == "error" and "exit code 1" in failed[0].message
        assert cell(screen, "grpo+none_s42", "status") == "failed"


async def test_sort_filter_and_read_only_kill(tmp_path: Path) -> None:
    directory = make_campaign(tmp_path, steps={"grpo+none_s42": 3, "grpo+none_s101": 9,
                                               "maxrl+gtpo_sepa_s42": 30}, statuses=RUNNING)
    app = RetrainApp(directory, strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.refresh_now()
        await pilot.press("n")
        screen.query_one("#runs-table").focus()
        await pilot.press("f")  # status filter: running
        assert [r[0] for r in table_text(screen)] == ["grpo+none_s101", "grpo+none_s42"]
        await pilot.press("f", "f", "f", "f", "f")  # back to all
        await pilot.press("o", "o", "o", "o")  # sort: progress
        assert screen.sort == "progress"
        assert [r[0] for r in table_text(screen)][-1] == "maxrl+gtpo_sepa_s42"
        await pilot.press("O")
        assert table_text(screen)[0][0] == "maxrl+gtpo_sepa_s42"
        await pilot.press("c")  # condition filter
        assert {r[0].rsplit("_s", 1)[0] for r in table_text(screen)} == {"grpo+none"}
        # the supervisor is gone: kill is refused, nothing is sent
        await pilot.press("K")
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen)
        assert any("not running" in n.message for n in app._notifications)
        assert not list((directory).glob("control/*"))


async def test_reattach_shows_the_same_state(tmp_path: Path) -> None:
    directory = make_campaign(tmp_path, steps={"grpo+none_s42": 7, "grpo+none_s101": 30,
                                               "maxrl+gtpo_sepa_s42": 12},
                              statuses={"grpo+none_s101": "succeeded",
                                        "grpo+none_s42": "killed",
                                        "maxrl+gtpo_sepa_s42": "failed",
                                        "maxrl+gtpo_sepa_s101": "succeeded"})
    seen = []
    for _ in range(2):
        app = RetrainApp(directory, strict=True, start_watchers=False,
                         clock=lambda: FIXED_TIME + 60)
        async with app.run_test(size=SIZE) as pilot:
            app.screen.refresh_now()
            await pilot.pause()
            assert isinstance(app.screen, MonitorScreen)  # all runs ended: no resume offer
            seen.append((table_text(app.screen),
                         str(app.screen.query_one("#campaign-header").render()),
                         str(app.screen.query_one("#condition-agg").get_row_at(0))))
            await pilot.press("q")
    assert seen[0] == seen[1]
    assert "killed" in str(seen[0][0])


async def test_run_detail_tails_logs_and_diffs_config(tmp_path: Path) -> None:
    demo = (REPO / "configs" / "demo.toml").read_text()
    directory = make_campaign(tmp_path, conditions=("grpo+none",), seeds=(42,),
                              steps={"grpo+none_s42": 5}, statuses={"grpo+none_s42": "running"},
                              campaign_toml=demo)
    run_dir = directory / "runs" / "grpo+none_s42"
    campaign = load_campaign(directory / "campaign.toml")
    (run_dir / "config.toml").write_text(config_to_toml(campaign.runs[0].config))
    append_text(run_dir / "stdout.log", "".join(f"line {i}\n" for i in range(20000)))
    (run_dir / "emergence").mkdir()
    append_text(run_dir / "emergence" / "generations.jsonl",
                '{"step": 5, "prompt": "What is 2+3?", "completion": "\\\\boxed{5}", '
                '"reward": 1.0, "num_tokens": 7}\n')
    app = RetrainApp(directory, strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        monitor = app.screen
        monitor.refresh_now()
        await pilot.press("n")
        monitor.query_one("#runs-table").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        detail = app.screen
        await app.workers.wait_for_complete()
        await pilot.pause()
        log = detail.query_one("#stdout-tail")
        assert log.lines[-1] == "line 19999" and len(log.lines) == 100
        assert "boxed{5}" in str(detail.query_one("#generations-text").render())
        diff = detail.query_one("#config-diff")
        keys = [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)]
        assert "training.seed" in keys and "training.max_steps" in keys
        assert "model.model" not in keys
        await pilot.press("escape")
        assert app.screen is monitor


async def test_squeeze_panel_highlights_recommended_row(tmp_path: Path) -> None:
    directory = make_campaign(tmp_path, statuses={r: "succeeded" for r in RUNNING})
    write_json(directory / "squeeze" / "analysis.json", SQUEEZE_ANALYSIS)
    app = RetrainApp(directory, strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        app.screen.refresh_now()
        await pilot.press("S")
        await pilot.pause()
        screen = app.screen
        summary = str(screen.query_one("#squeeze-summary").render())
        assert "recommended rank 4" in summary and "model.layers.0.mlp.down_proj" in summary
        table = screen.query_one("#squeeze-table")
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert [str(r[0]) for r in rows] == ["1", "2", "4", "8"]
        assert "recommended" in str(rows[2][-1]) and rows[2][0].style
        assert not rows[1][0].style


async def test_screens_above_the_monitor_follow_its_snapshots(tmp_path: Path) -> None:
    """The squeeze panel and the run detail show what the monitor's snapshots carry, as each
    new one arrives (here: polled once, by hand)."""
    from tests.support.campaigns import mark_supervisor_alive

    run = "grpo+none_s42"
    directory = make_campaign(tmp_path, steps={run: 3}, statuses=RUNNING)
    mark_supervisor_alive(directory)  # live: no resume offer in the way
    app = RetrainApp(directory, strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        monitor = app.screen
        monitor.refresh_now()
        await pilot.press("S")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "SqueezeScreen")
        summary = app.screen.query_one("#squeeze-summary")
        assert "recommended rank" not in str(summary.render())
        write_json(directory / "squeeze" / "analysis.json", SQUEEZE_ANALYSIS)
        monitor.refresh_now()
        await wait_for(pilot, lambda: "recommended rank 4" in str(summary.render()))
        await pilot.press("escape")
        table = monitor.query_one("#runs-table")
        table.focus()
        table.move_cursor(row=table.get_row_index(run))
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        header = app.screen.query_one("#detail-header")
        await wait_for(pilot, lambda: "[running]" in str(header.render()))
        write_state(directory, {**RUNNING, run: "failed"})
        monitor.refresh_now()
        await wait_for(pilot, lambda: "[failed]" in str(header.render()))


async def test_help_lists_keys_actions_and_descriptions(tmp_path: Path) -> None:
    directory = make_campaign(tmp_path, statuses=RUNNING)
    app = RetrainApp(directory, strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        app.screen.refresh_now()
        await pilot.press("n")  # no resume: the offer for a campaign without supervisor
        await pilot.press("question_mark")
        await pilot.pause()
        table = app.screen.query_one("#help-table")
        rows = {str(table.get_row_at(i)[1]): (str(table.get_row_at(i)[0]),
                                              str(table.get_row_at(i)[2]))
                for i in range(table.row_count)}
        for action in ("Kill", "Restart", "Pause/resume", "Squeeze", "Detail", "Quit", "Keys"):
            assert action in rows and rows[action][1], action
        assert rows["Kill"] == ("K", "SIGTERM the selected run's process group (asks first)")


async def test_picker_lists_campaigns_and_configs(tmp_path: Path, monkeypatch) -> None:
    make_campaign(tmp_path / "logs", statuses={r: "succeeded" for r in RUNNING})
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.toml").write_text((REPO / "configs" / "demo.toml").read_text())
    monkeypatch.chdir(tmp_path)
    app = RetrainApp(None, logs_dir=Path("logs"), strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        options = app.screen.query_one("#picker-list")
        texts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert "campaign_20260101_000000_demo" in texts[0] and "4 succeeded" in texts[0]
        assert any("configs/demo.toml" in t for t in texts)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen)


def test_watcher_coalesces_snapshots(tmp_path: Path) -> None:
    directory = make_campaign(tmp_path, steps={"grpo+none_s42": 3}, statuses=RUNNING)
    wakes = []
    watcher = CampaignWatcher(directory, interval=0.02, post=wakes.append)
    watcher.start()
    try:
        time.sleep(0.5)  # the UI never handles: snapshots replace each other in the watcher
    finally:
        watcher.stop(wait=True)
    assert len(wakes) == 1  # one message in flight, however many polls
    watcher.handled()  # the first message handled: the newest snapshot waiting is posted
    snap = wakes[-1].snapshot
    assert len(wakes) == 2 and snap is not None and snap.version > 3
    watcher.handled()  # nothing waits any more: nothing is posted
    assert len(wakes) == 2
    asyncio.run(asyncio.sleep(0))


def test_a_failure_in_a_snapshot_that_waited_is_still_announced(tmp_path: Path) -> None:
    """While a message is in flight, newer snapshots replace each other in the watcher; the
    failures one of them announces go on with the one that is finally posted, and a message
    announcing failures is never replaced by a newer one in a screen's queue."""
    run = "grpo+none_s42"
    directory = make_campaign(tmp_path, steps={run: 3}, statuses=RUNNING)
    posted = []
    watcher = CampaignWatcher(directory, interval=0.02, post=posted.append)
    watcher.start()
    try:
        wait_until(lambda: posted, 10, what="the first snapshot")
        write_state(directory, {**RUNNING, run: "failed"})
        for step in (3, 4):  # the poll that reads step 4 read state.json after it was written
            append_metrics(directory, run, "grpo+none", 42, step, 1)
            wait_until(lambda step=step: len(watcher.run_history(run)["mean_reward"]) > step,
                       10, what=f"a poll that read step {step}")
    finally:
        watcher.stop(wait=True)
    assert len(posted) == 1 and not posted[0].snapshot.new_failures
    watcher.handled()
    latest = posted[-1].snapshot
    assert len(posted) == 2 and latest.new_failures == [run]
    assert latest.run(run).status == "failed" and latest.run(run).step >= 5
    assert not posted[-1].can_replace(posted[0]) and posted[0].can_replace(posted[-1])


async def test_campaign_actions_in_command_palette(tmp_path: Path) -> None:
    directory = make_campaign(tmp_path, statuses=RUNNING)
    app = RetrainApp(directory, strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        app.screen.refresh_now()
        await pilot.press("n")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Kill", "Restart", "Pause/resume", "Squeeze", "Detail",
                      "Resume supervisor", "Keys", "Quit"):
            assert titles.count(title) == 1, title
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert type(app.screen).__name__ == "CommandPalette"


async def test_errors_become_notifications(tmp_path: Path) -> None:
    directory = make_campaign(tmp_path, statuses={r: "succeeded" for r in RUNNING})
    app = RetrainApp(directory, start_watchers=False)  # not strict: the user's setting
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.refresh_now()
        screen.watcher.plot_metric = "no-such-metric"  # makes the action raise ValueError
        await pilot.press("m")
        await pilot.pause()
        assert app.is_running and app.screen is screen
        assert any(n.severity == "error" and "ValueError" in n.message
                   for n in app._notifications)
    # an editor whose file cannot be written reports it and keeps the edits
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    app = RetrainApp(blocker / "demo.toml", logs_dir=tmp_path / "logs")
    async with app.run_test(size=SIZE) as pilot:
        await edit_field(pilot, "max_steps", "5")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.is_running and app.screen.document.dirty
        assert any("save failed" in n.message for n in app._notifications)


async def test_restart_and_pause_go_through_the_control_channel(tmp_path: Path) -> None:
    import json

    from tests.support.campaigns import mark_supervisor_alive

    directory = make_campaign(tmp_path, steps={"grpo+none_s42": 3}, statuses=RUNNING)
    mark_supervisor_alive(directory)  # this test process stands in for the supervisor
    app = RetrainApp(directory, strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.refresh_now()
        await pilot.pause()
        table = screen.query_one("#runs-table")
        table.move_cursor(row=table.get_row_index("grpo+none_s42"))
        await pilot.press("R")
        await pilot.pause()
        await pilot.press("y")
        await pilot.press("P")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("K")  # then decline: nothing is sent
        await pilot.pause()
        await pilot.press("n")
        await app.workers.wait_for_complete()
    sent = [json.loads(p.read_text()) for p in sorted((directory / "control").glob("*.json"))]
    assert [(c["command"], c["run"]) for c in sent] == [("restart", "grpo+none_s42"),
                                                        ("pause", None)]


async def test_condition_table_fits_its_pane_at_100x30(tmp_path: Path) -> None:
    """The longest demo label, negative rewards with wide CIs and two statuses per condition
    still fit: no column of the aggregate table is clipped behind a scrollbar."""
    conditions = ("grpo+none", "maxrl+gtpo_hicra")
    statuses = {"grpo+none_s42": "failed", "grpo+none_s101": "pending",
                "maxrl+gtpo_hicra_s42": "succeeded", "maxrl+gtpo_hicra_s101": "running"}
    directory = make_campaign(tmp_path, conditions=conditions, statuses=statuses,
                              steps={name: 30 for name in statuses})
    app = RetrainApp(directory, strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        snap = screen.refresh_now()
        await pilot.pause()
        table = screen.query_one("#condition-agg")
        assert [str(c.label) for c in table.columns.values()] == [
            "condition", "correct±CI", "reward±CI", "steps", "runs"]
        row = table.get_row_at(1)
        assert row[0] == "maxrl+gtpo_hicra" and "±" in row[2] and " " not in row[2]
        assert row[4] == "1run 1ok"
        assert snap.conditions and table.virtual_size.width <= table.size.width
        # the widest cells of a demo-sized campaign (negative mean, two statuses) fit too;
        # wider ones (hundreds of steps, CI ≥ 10) scroll rather than clip
        table.add_row("maxrl+gtpo_hicra", "0.50±0.50", "-0.53±1.79", "60/60", "1fail 1pend")
        await pilot.pause()
        assert table.virtual_size.width <= table.size.width
        await pilot.press("q")
