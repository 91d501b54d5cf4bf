"""Pilot tests of issue #19's rough edges: keys from any focus, one palette entry per action,
a help screen that explains, layout-keeping saves, truncated labels, the finished campaign,
the farewell line, `retrain status` before any campaign, pilot step times read once, and
the defaults that fill in."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.binding import Binding
from textual.widgets import DataTable, TabbedContent, TextArea
from waits import edit_field, palette_offers

import retrain_tui
from retrain_core.plan import CPU_PRESET_S, detect_preset
from retrain_tui.app import RetrainApp
from retrain_tui.commands import screen_actions
from retrain_tui.dialogs.condition import ConditionDialog
from retrain_tui.screens.help import HelpScreen
from retrain_tui.screens.monitor import MonitorScreen
from tests.support.campaigns import FIXED_TIME, make_campaign, mark_supervisor_alive, write_json

REPO = Path(__file__).resolve().parent.parent
SIZE = (100, 30)


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    path = tmp_path / "demo.toml"
    shutil.copy(REPO / "configs" / "demo.toml", path)
    return path


def editor_app(path: Path, tmp_path: Path, **kwargs) -> RetrainApp:
    return RetrainApp(path, logs_dir=tmp_path / "logs", strict=True, **kwargs)


def plan_body(app) -> str:
    return str(app.screen.query_one("#plan-body").render())


async def wait_until(pilot, condition, ceiling: float = 90.0) -> None:
    """Returns as soon as `condition()` holds; fails after `ceiling` seconds (a busy box)."""
    deadline = time.monotonic() + ceiling
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


# -- keys, palette, help ----------------------------------------------------------------------
async def test_ctrl_t_switches_tabs_from_any_focus(demo_copy: Path, tmp_path: Path) -> None:
    app = editor_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        tabs = app.screen.query_one(TabbedContent)
        for selector in ("#condition-table", "#field-max_steps", "#seed-input",
                         "#plan-step-time", "#base-toml", "#problems"):
            widget = app.screen.query_one(selector)
            tabs.active = "tab-base" if selector == "#base-toml" else "tab-campaign"
            await pilot.pause()
            widget.focus()
            await pilot.pause()
            before = tabs.active
            await pilot.press("ctrl+t")
            await pilot.pause()
            assert tabs.active != before, f"ctrl+t ignored with focus on {selector}"


async def test_palette_lists_every_action_once(demo_copy: Path, tmp_path: Path) -> None:
    app = editor_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        titles = [c.title for c in app.get_system_commands(screen)]
        assert len(titles) == len(set(titles)), titles
        for name in ("Save", "Campaign/Base TOML", "Launch", "$EDITOR", "Keys", "Quit",
                     "Add condition", "Delete condition", "Tab indents"):
            assert name in titles
        assert {a.name for a in screen_actions(screen)} <= set(titles)
        # the palette runs them: Save writes the file
        await palette_offers(pilot, "Save")
        screen.document.set("max_retries", 3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "max_retries = 3" in demo_copy.read_text())
        assert not screen.document.dirty


def _binding_classes():
    for info in pkgutil.walk_packages(retrain_tui.__path__, "retrain_tui."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and "BINDINGS" in vars(cls):
                yield cls


def test_every_binding_has_an_id_and_a_description() -> None:
    classes = list(_binding_classes())
    assert len(classes) >= 8
    for cls in classes:
        for binding in cls.BINDINGS:
            assert isinstance(binding, Binding), f"{cls.__name__}: a tuple binding {binding}"
            assert binding.id, f"{cls.__name__}: {binding.key} has no id"
            assert binding.description and binding.tooltip, (
                f"{cls.__name__}: {binding.key} needs a name and a description")


async def test_help_shows_key_action_and_description(demo_copy: Path, tmp_path: Path) -> None:
    app = editor_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-table", DataTable)
        assert [str(c.label) for c in table.columns.values()] == ["key", "action", "description"]
        rows = [tuple(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]
        save = next(r for r in rows if r[1] == "Save")
        assert save[0] == app.get_key_display(Binding("ctrl+s", "")) and "layout" in save[2]
        assert any(r[1] == "Delete condition" and "asks first" in r[2] for r in rows)
        assert not any("." in r[1] or "_" in r[1] for r in rows), "internal ids shown"
        quit_row = next(r for r in rows if r[1] == "Quit")
        assert quit_row[0] == f"q / {app.get_key_display(Binding('ctrl+q', ''))}"


# -- editor -----------------------------------------------------------------------------------
async def test_problem_keeps_the_section_name(demo_copy: Path, tmp_path: Path) -> None:
    demo_copy.write_text(demo_copy.read_text().replace("delay_steps = 2", "delay_stepz = 2"))
    app = editor_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        problems = app.screen.query_one("#problems")
        shown = [str(problems.get_option_at_index(i).prompt)
                 for i in range(problems.option_count)]
        assert any("unknown key in [sepa]" in line and "delay_steps" in line for line in shown), shown


async def test_save_keeps_the_users_layout(demo_copy: Path, tmp_path: Path) -> None:
    original = demo_copy.read_text().replace(
        '{ advantage_mode = "maxrl", transform_mode = "gtpo_sepa" }',
        '{ advantage_mode = "maxrl", transform_mode = "gtpo_sepa", lr = 5e-4, sepa.steps = 10 }')
    demo_copy.write_text(original)
    app = editor_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await edit_field(pilot, "max_steps", "")  # cleared: the key leaves the table ...
        assert "max_steps" not in screen.document.full_text().split("conditions")[0]
        await pilot.press("4", "0")  # ... and typed again: back at its place
        await wait_until(pilot, lambda: screen.document.get("max_steps") == 40)
        # edit condition 5 in the dialog: only its transform changes
        table = screen.query_one("#condition-table")
        table.focus()
        table.move_cursor(row=4)
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ConditionDialog)
        app.screen.query_one("#transform_mode").value = "gtpo"
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
    saved = demo_copy.read_text()
    assert saved == original.replace("max_steps = 30", "max_steps = 40").replace(
        'transform_mode = "gtpo_sepa", lr = 5e-4, sepa.steps = 10',
        'transform_mode = "gtpo", lr = 5e-4, sepa.steps = 10')


async def test_long_labels_end_with_an_ellipsis(demo_copy: Path, tmp_path: Path) -> None:
    long = ('{ advantage_mode = "maxrl", transform_mode = "gtpo_sepa", sepa.steps = 10, '
            'sepa.delay_steps = 3, lr = 5e-4 }')
    demo_copy.write_text(demo_copy.read_text().replace(
        '{ advantage_mode = "maxrl", transform_mode = "gtpo_sepa" }', long))
    app = editor_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#condition-table", DataTable)
        label, overrides = (str(table.get_row_at(4)[i]) for i in (1, 4))
        assert label.endswith("…") and label.startswith("maxrl+gtpo_sepa~")
        assert overrides.endswith("…")
        assert all(len(str(table.get_row_at(r)[1])) <= 30 for r in range(table.row_count))


async def test_tab_moves_focus_out_of_the_toml_editor(demo_copy: Path, tmp_path: Path) -> None:
    app = editor_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+t")
        area = app.screen.query_one("#base-toml", TextArea)
        area.focus()
        await pilot.pause()
        text = area.text
        await pilot.press("tab")
        await pilot.pause()
        assert not area.has_focus and area.text == text
        area.focus()
        await pilot.press("f2")  # the user chooses indentation
        area.move_cursor((0, 0))
        await pilot.press("tab")
        await pilot.pause()
        assert area.has_focus and area.text != text and area.text.startswith(" ")


# -- plan panel and explain: CPU preset, defaults, pilots --------------------------------------
async def test_plan_panel_cpu_preset(demo_copy: Path, tmp_path: Path) -> None:
    app = editor_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.screen.query_one("#plan-gpu").value = "cpu"
        await wait_until(pilot, lambda: "source: preset:cpu" in plan_body(app))
        body = plan_body(app)
        assert f"step time        {CPU_PRESET_S:.2f} s" in body  # the demo's own shape
        assert "wall time        unknown" not in body and "a busy box is slower" in body


async def test_defaults_are_named_in_the_plan(tmp_path: Path) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text("[campaign]\nparallel = true\n")
    app = editor_app(bare, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "40 runs" in plan_body(app))
        body = plan_body(app)
        assert "default: no conditions given: the default 5-condition ablation" in body
        assert "default: no [model].model given: the default Qwen/Qwen3-4B" in body
        assert "default: no max_steps given: the default 500 steps per run" in body


def test_explain_names_the_defaults(tmp_path: Path) -> None:
    bare = tmp_path / "bare.toml"
    # local data: explain does not look for the default math dataset on the hub
    bare.write_text('[campaign]\nparallel = true\n\n[data]\nsource = "arithmetic"\n')
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "retrain_core.cli", "explain", str(bare)],
                         capture_output=True, text=True, timeout=120, check=False, env=env)
    assert out.returncode == 0, out.stderr
    assert "default: no conditions given: the default 5-condition ablation" in out.stdout
    assert "default: no [model].model given" in out.stdout
    js = subprocess.run([sys.executable, "-m", "retrain_core.cli", "explain", str(bare),
                         "--json"], capture_output=True, text=True, timeout=120, check=False,
                        env=env)
    assert js.returncode == 0, js.stderr
    assert any("5-condition ablation" in note for note in json.loads(js.stdout)["defaults"])
    # the demo sets them all: no note
    demo = subprocess.run([sys.executable, "-m", "retrain_core.cli", "explain",
                           str(REPO / "configs" / "demo.toml")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert demo.returncode == 0 and "default:" not in demo.stdout


def append_lines(path: Path, rows: list[dict]) -> None:
    with open(path, "a") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)


def _pilot_run(logs: Path, step_times: list[float]) -> Path:
    run = logs / "campaign_x" / "runs" / "grpo+none_s42"
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "configs" / "demo.toml", run / "config.toml")
    append_lines(run / "metrics.jsonl", [{"step": i, "step_time_s": t}
                                         for i, t in enumerate(step_times)])
    return run / "metrics.jsonl"


async def test_typing_does_not_reread_pilots(demo_copy: Path, tmp_path: Path) -> None:
    metrics = _pilot_run(tmp_path / "logs", [2.0, 2.0, 2.0])
    app = editor_app(demo_copy, tmp_path, poll_interval=0.1)  # pilots refresh every second
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: "source: pilot" in plan_body(app))
        assert "step time        2.00 s" in plan_body(app)
        reads = screen.pilots.reads
        field = screen.query_one("#field-max_steps")
        field.focus()
        for text in ("3", "31", "3", "32"):
            field.value = text
            await pilot.pause()
        await app.workers.wait_for_complete()
        assert screen.pilots.reads == reads  # estimates on each keystroke read no file
        # a pilot that logs more steps is read again, once, and the plan follows
        append_lines(metrics, [{"step": i, "step_time_s": 4.0} for i in range(3, 9)])
        os.utime(metrics, ns=(time.time_ns(), time.time_ns() + 10**9))  # coarse clocks
        await wait_until(pilot, lambda: "step time        4.00 s" in plan_body(app))
        assert screen.pilots.reads == reads + 1


# -- monitor: finished campaigns, columns, farewell ------------------------------------------
def finished_campaign(root: Path) -> Path:
    statuses = {f"{c}_s{s}": "succeeded" for c in ("grpo+none", "maxrl+gtpo_sepa")
                for s in (42, 101)}
    directory = make_campaign(root, steps=dict.fromkeys(statuses, 30), statuses=statuses)
    state = json.loads((directory / "state.json").read_text())
    state["supervisor"]["heartbeat"] = FIXED_TIME + 600  # the supervisor's last write
    write_json(directory / "state.json", state)
    return directory


async def test_finished_campaign_says_so_and_hides_controls(tmp_path: Path) -> None:
    directory = finished_campaign(tmp_path / "logs")
    app = RetrainApp(directory, logs_dir=tmp_path / "logs", strict=True,
                     clock=lambda: FIXED_TIME + 5000, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, MonitorScreen)
        screen.refresh_now()
        await pilot.pause()
        header = str(screen.query_one("#campaign-header").render())
        assert "finished" in header and "read-only" not in header
        assert "elapsed 10m00s" in header  # stopped at the end, not 1h23m of looking
        footer_keys = {b.binding.key for b in app.screen.active_bindings.values()
                       if b.binding.show and b.enabled}
        assert not footer_keys & {"K", "R", "P"}
        titles = [c.title for c in app.get_system_commands(screen)]
        assert "Kill" not in titles and "Restart" not in titles and "Squeeze" in titles
        await pilot.press("K")
        await pilot.pause()
        assert app.screen is screen  # no dialog: the key does nothing on a finished campaign
        await pilot.press("enter")  # the run detail hides them too
        await pilot.pause()
        assert type(app.screen).__name__ == "RunDetailScreen"
        shown = {b.binding.key for b in app.screen.active_bindings.values()
                 if b.binding.show and b.enabled}
        assert "K" not in shown and "R" not in shown and "escape" in shown


async def test_lambda_blank_without_sepa_and_one_wait_format(tmp_path: Path) -> None:
    statuses = {"grpo+none_s42": "running", "maxrl+gtpo_sepa_s42": "running"}
    directory = make_campaign(tmp_path / "logs", seeds=(42,), steps=dict.fromkeys(statuses, 5),
                              statuses=statuses)
    mark_supervisor_alive(directory)  # live: no resume offer in the way
    append_lines(directory / "runs" / "grpo+none_s42" / "metrics.jsonl",
                 [{"step": 5, "sepa_lambda": 0.0, "throttle_wait_s": 0.0002, "step_time_s": 1.5}])
    app = RetrainApp(directory, logs_dir=tmp_path / "logs", strict=True,
                     clock=lambda: FIXED_TIME + 100, start_watchers=False)
    async with app.run_test(size=(160, 30)) as pilot:
        app.screen.refresh_now()
        await pilot.pause()
        table = app.screen.query_one("#runs-table", DataTable)
        cells = {key.value: dict(zip((c.value for c in table.columns), table.get_row(key)))
                 for key in table.rows}
        assert str(cells["grpo+none_s42"]["sepa_lambda"]) == ""
        assert str(cells["maxrl+gtpo_sepa_s42"]["sepa_lambda"]) == "0.20"
        waits = [str(row["throttle_wait_s"]) for row in cells.values()]
        assert waits == ["0.00", "0.10"] or waits == ["0.10", "0.00"]


async def test_quitting_prints_the_folder_and_how_to_come_back(tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    directory = finished_campaign(Path("logs"))
    app = RetrainApp(directory, logs_dir=Path("logs"), strict=True, start_watchers=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
    note = app.farewell()
    assert f"campaign {directory}" in note and "not running" in note
    assert f"re-attach: retrain-tui {directory}" in note
    assert RetrainApp(tmp_path / "x.toml").farewell() == ""  # no campaign: nothing to say


def test_an_error_no_handler_caught_ends_the_app_with_one_line(tmp_path: Path, capsys) -> None:
    """Textual hands such an error to no public hook: it closes the app (return code 1) and
    prints a traceback. `RetrainApp.run` keeps the traceback off the terminal and the
    exception's line, unwrapped, in `fatal_error` (what `main` prints)."""
    directory = finished_campaign(tmp_path / "logs")
    message = "the view broke: " + " ".join(["far too long for one line"] * 8)

    class BrokenApp(RetrainApp):
        def on_ready(self) -> None:
            raise RuntimeError(message)

    app = BrokenApp(directory, logs_dir=tmp_path / "logs", start_watchers=False)
    app.run(headless=True, size=SIZE)
    assert app.return_code == 1
    assert app.fatal_error == f"RuntimeError: {message}"
    assert "Traceback" not in capsys.readouterr().err


def test_status_without_logs_dir(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    text = subprocess.run([sys.executable, "-m", "retrain_core.cli", "status"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert text.returncode == 0, text.stderr
    assert "no campaigns yet" in text.stdout and not text.stderr
    js = subprocess.run([sys.executable, "-m", "retrain_core.cli", "status", "--json"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert js.returncode == 0 and json.loads(js.stdout) == {"campaigns": []}
    typo = subprocess.run([sys.executable, "-m", "retrain_core.cli", "status", "nope"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert typo.returncode == 2 and "nope does not exist" in typo.stderr


def test_machine_preset_is_cpu_without_nvidia_smi() -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: its GPU decides")
    assert detect_preset() == "cpu"
