"""Pilot tests of the editor screen: seeds, conditions, validation, save, quit."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
from waits import edit_field, wait_for

from retrain_core.plan import detect_preset
from retrain_tui.app import RetrainApp
from retrain_tui.dialogs.confirm import ConfirmDialog
from retrain_tui.document import CampaignDocument
from retrain_tui.screens.editor import EditorScreen

REPO = Path(__file__).resolve().parent.parent
SIZE = (100, 30)


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    path = tmp_path / "demo.toml"
    shutil.copy(REPO / "configs" / "demo.toml", path)
    return path


def make_app(path: Path, tmp_path: Path) -> RetrainApp:
    return RetrainApp(path, logs_dir=tmp_path / "logs", strict=True)


async def set_input(pilot, selector: str, text: str) -> None:
    if selector.startswith("#field-"):
        await edit_field(pilot, selector.removeprefix("#field-"), text)
        return
    widget = pilot.app.screen.query_one(selector)
    widget.focus()
    widget.value = text
    await pilot.pause()


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines())
            if line[:1] in "+-"]


async def test_add_edit_remove_seed(demo_copy: Path, tmp_path: Path) -> None:
    app = make_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, EditorScreen)
        assert screen.document.seeds() == [42, 101]
        await set_input(pilot, "#seed-input", "303")
        await pilot.click("#seed-add")
        await pilot.pause()
        assert screen.document.seeds() == [42, 101, 303]
        assert screen.campaign is not None and len(screen.campaign.runs) == 15
        assert "15 runs" in str(screen.query_one("#plan-body").render())
        # select the first seed, change it, then remove it
        seed_list = screen.query_one("#seed-list")
        seed_list.index = 0
        await set_input(pilot, "#seed-input", "7")
        await pilot.click("#seed-set")
        await pilot.pause()
        assert screen.document.seeds() == [7, 101, 303]
        seed_list.index = 0
        await pilot.click("#seed-remove")
        await pilot.pause()
        assert screen.document.seeds() == [101, 303]
        assert screen.document.dirty and "[modified]" in screen.sub_title


async def test_duplicate_seed_is_an_error(demo_copy: Path, tmp_path: Path) -> None:
    app = make_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await set_input(pilot, "#seed-input", "42")
        await pilot.click("#seed-add")
        await pilot.pause()
        assert any(p.key.startswith("campaign.seeds") for p in screen.problems)
        assert screen.query_one("#seed-list").has_class("-invalid")


async def test_add_duplicate_move_delete_condition(demo_copy: Path, tmp_path: Path) -> None:
    app = make_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert len(screen.document.conditions()) == 5
        await pilot.click("#cond-add")
        await pilot.pause()
        dialog = app.screen
        await set_input(pilot, "#advantage_mode", "grpo")
        await set_input(pilot, "#transform_mode", "gtpo_sepa")
        await set_input(pilot, "#overrides", "sepa.steps = 10, lr = 1e-3")
        await pilot.click("#ok")
        await pilot.pause()
        assert app.screen is screen and dialog is not screen
        conds = screen.document.conditions()
        assert len(conds) == 6
        assert conds[-1] == {"advantage_mode": "grpo", "transform_mode": "gtpo_sepa",
                             "sepa": {"steps": 10}, "lr": 1e-3}
        labels = [c.label for c in screen.campaign.conditions]
        assert labels[-1] == "grpo+gtpo_sepa~sepa.steps=10,training.lr=0.001"
        table = screen.query_one("#condition-table")
        assert table.row_count == 6
        # duplicating gives a duplicate label: an error, until the copy is moved & deleted
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("d")  # keyboard: d duplicate, ctrl+down move, delete
        await pilot.pause()
        assert len(screen.document.conditions()) == 7
        assert any("duplicate condition label" in p.message for p in screen.problems)
        await pilot.press("ctrl+down")
        await pilot.pause()
        assert table.cursor_row == 2
        assert screen.document.conditions()[2] == {"advantage_mode": "grpo",
                                                   "transform_mode": "none"}
        await pilot.press("delete")  # asks first: "n" keeps the condition
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and "Delete condition 3" in str(
            app.screen.query_one(".dialog-title").render())
        await pilot.press("n")
        await pilot.pause()
        assert len(screen.document.conditions()) == 7
        await pilot.press("delete", "y")
        await pilot.pause()
        assert len(screen.document.conditions()) == 6 and not screen.problems
        table.move_cursor(row=5)
        await pilot.press("delete", "y")
        await pilot.pause()
        assert len(screen.document.conditions()) == 5
        assert screen.document.full_text().count("advantage_mode") == 5


async def test_invalid_value_shows_error_and_blocks_launch(demo_copy: Path,
                                                           tmp_path: Path) -> None:
    app = make_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await set_input(pilot, "#field-max_steps", "ten")
        problems = [p for p in screen.problems if p.key == "campaign.max_steps"]
        assert problems and problems[0].line == 6
        assert screen.query_one("#field-max_steps").has_class("-invalid")
        shown = str(screen.query_one("#problems").get_option_at_index(0).prompt)
        assert "L6" in shown and "campaign.max_steps" in shown
        screen.query_one("#condition-table").focus()
        await pilot.press("L")
        await pilot.pause()
        assert app.screen is screen  # no confirm dialog
        assert any("cannot launch" in n.message for n in app._notifications)
        assert not (tmp_path / "logs").exists()
        # fixing the value clears the mark and the problem
        await set_input(pilot, "#field-max_steps", "12")
        assert not screen.problems
        assert not screen.query_one("#field-max_steps").has_class("-invalid")


async def test_base_toml_error_is_located(demo_copy: Path, tmp_path: Path) -> None:
    app = make_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        area = screen.query_one("#base-toml")
        area.text = area.text.replace("batch_size = 4", "batch_sise = 4")
        await wait_for(pilot, lambda: any("batch_sise" in p.key for p in screen.problems), 10,
                       what="the live validation of the edited TOML")
        bad = [p for p in screen.problems if "batch_sise" in p.key]
        assert bad and "did you mean" in bad[0].message
        assert area.has_class("-invalid")
        # the full text keeps the campaign table at its place
        text = screen.document.full_text()
        assert text.index("[campaign]") < text.index("[backend]")
        assert changed_lines(demo_copy.read_text(), text) == ["- batch_size = 4",
                                                              "+ batch_sise = 4"]


async def test_save_preserves_comments_and_layout(demo_copy: Path, tmp_path: Path) -> None:
    original = demo_copy.read_text()
    # a comment inside the campaign table and a trailing comment on an edited line's neighbour
    original = original.replace("max_workers = 2", "max_workers = 2  # two at a time")
    original = original.replace("[backend]", "# backend comment\n[backend]")
    demo_copy.write_text(original)
    app = make_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await set_input(pilot, "#field-max_steps", "12")
        await set_input(pilot, "#seed-input", "303")
        await pilot.click("#seed-add")
        await pilot.press("ctrl+s")
        await pilot.pause()
        saved = demo_copy.read_text()
        assert not screen.document.dirty
    assert sorted(changed_lines(original, saved)) == [
        "+ max_steps = 12", "+ seeds = [42, 101, 303]", "- max_steps = 30",
        "- seeds = [42, 101]"]
    # byte-for-byte outside the edited keys
    assert saved.replace("seeds = [42, 101, 303]", "seeds = [42, 101]").replace(
        "max_steps = 12", "max_steps = 30") == original
    assert not list(tmp_path.glob(".demo.toml.*"))  # no temp file left behind


async def test_quit_with_unsaved_changes_asks(demo_copy: Path, tmp_path: Path) -> None:
    app = make_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await set_input(pilot, "#field-max_retries", "2")
        screen.query_one("#condition-table").focus()
        await pilot.press("q")
        await pilot.pause()
        assert app.screen is not screen and app.is_running  # the question
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is screen and app.is_running
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
    assert app.return_code == 0
    assert "max_retries = 0" in demo_copy.read_text()  # nothing was saved


async def test_plan_panel_updates_with_step_time(demo_copy: Path, tmp_path: Path) -> None:
    app = make_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await app.workers.wait_for_complete()
        await pilot.pause()
        # no pilots, no choice: this machine's preset (cpu without nvidia-smi), else unknown
        machine = detect_preset()
        expected = f"source: preset:{machine}" if machine else "source: unknown"
        assert expected in str(screen.query_one("#plan-body").render())
        await set_input(pilot, "#plan-step-time", "2")
        await app.workers.wait_for_complete()
        await pilot.pause()
        body = str(screen.query_one("#plan-body").render())
        # 300 steps × 2 s / 2 workers + 2 s stagger = 302 s
        assert "source: given" in body and "5m02s" in body
        screen.query_one("#plan-gpu").value = "h100"
        await set_input(pilot, "#plan-step-time", "")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "source: preset:h100" in str(screen.query_one("#plan-body").render())


def test_document_new_campaign_table_in_single_run_file(tmp_path: Path) -> None:
    text = "# run\n[training]\nlr = 1e-4  # keep\n"
    doc = CampaignDocument(text, tmp_path / "run.toml")
    doc.add_seed(5)
    out = doc.full_text()
    assert out.startswith("# run\n[campaign]\nseeds = [42, 101, 202, 303, 404, 505, 606, 707, 5]")
    assert out.endswith("[training]\nlr = 1e-4  # keep\n")


def test_toml_area_falls_back_to_plain_text(monkeypatch) -> None:
    from textual.widgets import TextArea
    from textual.widgets._text_area import LanguageDoesNotExist

    from retrain_tui.screens import editor

    original = TextArea.code_editor.__func__

    def no_toml(cls, text="", *, language=None, **kwargs):
        if language == "toml":
            raise LanguageDoesNotExist("no tree-sitter-toml here")
        return original(cls, text, language=language, **kwargs)

    monkeypatch.setattr(TextArea, "code_editor", classmethod(no_toml))
    area = editor.make_toml_area("[training]\nlr = 1\n")
    assert area.language is None and area.text.startswith("[training]")


async def test_max_workers_auto_or_emptied_means_all_runs(demo_copy: Path, tmp_path: Path) -> None:
    """`"auto"` typed into max_workers is valid and written as typed; emptying the field
    drops the key (the placeholder says what that means): both mean every run at once."""
    app = make_app(demo_copy, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await set_input(pilot, "#field-max_workers", "auto")
        assert not screen.problems and not screen.query_one("#field-max_workers").has_class("-invalid")
        assert 'max_workers = "auto"' in screen.document.full_text()
        assert screen.campaign.settings.max_workers is None
        await set_input(pilot, "#field-max_workers", "")
        assert not screen.problems and "max_workers" not in screen.document.full_text()
        assert screen.campaign.settings.max_workers is None
        assert screen.query_one("#field-max_workers").placeholder == "all runs"
