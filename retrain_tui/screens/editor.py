"""The editor: campaign fields, seeds, conditions, the base config TOML, problems and the
plan panel. Every change goes through `CampaignDocument` (tomlkit, so the user's comments
and layout survive) and is validated at once with `retrain_core.config.load_campaign_text`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane, TextArea

from retrain_core.config import ConfigError, Problem, load_campaign_text
from retrain_core.config.defaults import filled_defaults
from retrain_core.plan import PilotIndex
from retrain_tui.dialogs.condition import ConditionDialog
from retrain_tui.dialogs.confirm import ConfirmDialog
from retrain_tui.document import CAMPAIGN_SCALARS, CampaignDocument
from retrain_tui.errors import guarded
from retrain_tui.widgets.campaign_fields import CampaignFields
from retrain_tui.widgets.conditions_editor import ConditionsEditor
from retrain_tui.widgets.plan_panel import PlanPanel
from retrain_tui.widgets.problems_list import ProblemsList
from retrain_tui.widgets.seeds_editor import SeedsEditor


def make_toml_area(text: str) -> TextArea:
    """A TOML code editor; plain text when tree-sitter's TOML grammar is not installed."""
    try:
        return TextArea.code_editor(text, language="toml", id="base-toml", soft_wrap=False,
                                    tab_behavior="focus")
    except Exception:  # noqa: BLE001 - LanguageDoesNotExist and friends: highlighting is a nicety
        return TextArea.code_editor(text, language=None, id="base-toml", soft_wrap=False,
                                    tab_behavior="focus")


class EditorScreen(Screen):
    DEFAULT_CSS = """
    #editor-body { height: 1fr; }
    #editor-main { width: 1fr; }
    #editor-tabs { height: 1fr; }
    #editor-tabs TabPane { padding: 0; }
    #campaign-scroll { height: 1fr; padding: 0 1; }
    #base-toml { height: 1fr; }
    #problems {
        height: auto;
        max-height: 6;
        border: round $error;
        border-title-color: $error;
    }
    #problems.-empty { height: 1; border: none; color: $success; }
    #plan {
        width: 36;
        max-width: 42%;
        height: 1fr;
        border-left: vkey $foreground 20%;
        padding: 0 1;
    }
    """
    AUTO_FOCUS = "#condition-table"  # keyboard first: the screen's keys work at once
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("ctrl+s", "save", "Save", id="save", priority=True,
                tooltip="Write the TOML file; your layout, comments and spellings stay"),
        Binding("L", "launch", "Launch", id="launch",
                tooltip="Start a detached supervisor for this campaign (asks first)"),
        Binding("ctrl+e", "external_editor", "$EDITOR", id="external_editor",
                tooltip="Edit the whole file in $VISUAL or $EDITOR"),
        # priority: the inputs, tables and the TOML editor must not swallow it
        Binding("ctrl+t", "toggle_tab", "Campaign/Base TOML", id="toggle_tab", priority=True,
                tooltip="Switch between the campaign form and the base config TOML"),
        Binding("f2", "toggle_tab_indent", "Tab indents", id="tab_indent", show=False,
                tooltip="In the TOML editor Tab inserts spaces instead of moving focus "
                        "(press again to undo)"),
        Binding("question_mark", "app.help", "Keys", id="help",
                tooltip="Every key of this screen, with what it does"),
        Binding("q", "quit", "Quit", id="quit",
                tooltip="Leave retrain-tui (asks when there are unsaved edits)"),
        Binding("escape", "back", "Back", id="back", show=False,
                tooltip="Return to the previous screen (asks when there are unsaved edits)"),
    ]

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.document: CampaignDocument | None = None
        self.campaign = None
        self.problems: list[Problem] = []
        self.defaults: list[str] = []  # gaps of the file that defaults fill, for the plan
        self.pilots: PilotIndex | None = None
        self._plan_generation = 0

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="⚙")
        with Horizontal(id="editor-body"):
            with Vertical(id="editor-main"):
                with TabbedContent(id="editor-tabs"):
                    with (TabPane("Campaign", id="tab-campaign"),
                          VerticalScroll(id="campaign-scroll")):
                        yield CampaignFields(id="campaign-fields")
                        yield SeedsEditor(id="seeds")
                        yield ConditionsEditor(id="conditions")
                    with TabPane("Base TOML", id="tab-base"):
                        yield make_toml_area("")
                yield ProblemsList(id="problems")
            yield PlanPanel(id="plan")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "retrain-tui · editor"
        try:
            text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        except OSError as exc:
            self.app.notify(f"cannot read {self.path}: {exc}", severity="error")
            text = ""
        self.pilots = PilotIndex(self.app.logs_dir)
        self.load_text(text)
        # Pilot step times are read once here and then only for files that changed: the
        # estimate on each keystroke reads nothing from logs/.
        self._refresh_pilots()
        self.set_interval(self.app.poll_interval * 10, self._refresh_pilots)

    def load_text(self, text: str, original: str | None = None) -> None:
        self.document = CampaignDocument(text, self.path)
        if original is not None:
            self.document.original_text = original
        area = self.query_one("#base-toml", TextArea)
        with self.prevent(TextArea.Changed):
            area.load_text(self.document.base_text)
        self.refresh_views()

    # -- model -> views -------------------------------------------------------------------
    def validate(self) -> None:
        doc = self.document
        try:
            self.campaign = load_campaign_text(doc.full_text(), doc.path)
            self.problems = []
            self.defaults = filled_defaults(self.campaign, tomllib.loads(doc.full_text()))
        except ConfigError as exc:
            self.campaign, self.problems = None, list(exc.problems)
        except Exception as exc:  # noqa: BLE001 - a validator bug must not take the editor down
            self.campaign, self.problems = None, [Problem(str(doc.path), 0, "", str(exc))]

    def refresh_views(self, cursor: int | None = None) -> None:
        doc = self.document
        self.validate()
        self.query_one(CampaignFields).load({k: doc.get(k) for k in CAMPAIGN_SCALARS})
        self.query_one(SeedsEditor).load(doc.seeds())
        labels = [c.label for c in self.campaign.conditions] if self.campaign else None
        if self.campaign and not self.campaign.is_campaign:
            labels = None
        self.query_one(ConditionsEditor).load(doc.conditions(), labels, cursor)
        self._mark_problems()
        self.query_one(ProblemsList).show(self.problems)
        self.sub_title = f"{doc.path.name}{' [modified]' if doc.dirty else ''}"
        self.schedule_plan()

    def _mark_problems(self) -> None:
        keys = {p.key for p in self.problems}
        fields = {k.split(".", 1)[1].split("[")[0] for k in keys if k.startswith("campaign.")}
        self.query_one(CampaignFields).mark(fields)
        self.query_one(SeedsEditor).mark("seeds" in fields)
        bad_rows = set()
        for key in keys:
            if key.startswith("campaign.conditions["):
                try:
                    bad_rows.add(int(key.split("[", 1)[1].split("]", 1)[0]))
                except ValueError:
                    pass
        self.query_one(ConditionsEditor).mark(bad_rows, "conditions" in fields)
        in_base = any(p.line and self.document.base_line_offset(p.line) is not None
                      and not p.key.startswith("campaign") for p in self.problems)
        in_base |= any(p.key == "" for p in self.problems)
        self.query_one("#base-toml").set_class(in_base, "-invalid")

    def schedule_plan(self) -> None:
        self._plan_generation += 1
        panel = self.query_one(PlanPanel)
        if self.campaign is None:
            panel.show_plan(None, None)
            return
        panel.show_plan(self.campaign, None, "estimating…", self.defaults)
        self._estimate(self.campaign, panel.gpu, panel.step_time_s, self._plan_generation)

    @work(thread=True, exclusive=True, group="pilots")
    def _refresh_pilots(self) -> None:
        if self.pilots is not None and self.pilots.refresh():
            self.app.call_from_thread(self.schedule_plan)

    @work(thread=True, exclusive=True, group="plan")
    def _estimate(self, campaign, gpu, step_time_s, generation: int) -> None:
        from retrain_core.plan import estimate

        try:
            # detect: pilots first, else this machine's preset (its GPU, or the CPU preset)
            result, error = estimate(campaign, gpu=gpu, step_time_s=step_time_s,
                                     logs_dir=self.app.logs_dir, detect=True,
                                     pilots=self.pilots).to_dict(), ""
        except Exception as exc:  # noqa: BLE001
            result, error = None, f"estimate failed: {exc}"
        self.app.call_from_thread(self._show_estimate, campaign, result, error, generation)

    def _show_estimate(self, campaign, result, error, generation) -> None:
        if generation == self._plan_generation and self.is_attached:
            self.query_one(PlanPanel).show_plan(campaign, result, error, self.defaults)

    # -- edits ----------------------------------------------------------------------------
    @on(CampaignFields.Changed)
    @guarded
    def _field_changed(self, event: CampaignFields.Changed) -> None:
        self.document.set(event.key, event.value)
        self.refresh_views()

    @on(SeedsEditor.Changed)
    @guarded
    def _seeds_changed(self, event: SeedsEditor.Changed) -> None:
        doc = self.document
        if event.op == "add":
            doc.add_seed(event.value)
        elif event.op == "set":
            doc.set_seed(event.index, event.value)
        elif event.op == "remove":
            doc.remove_seed(event.index)
        self.refresh_views()

    @on(ConditionsEditor.Requested)
    @guarded
    def _condition_requested(self, event: ConditionsEditor.Requested) -> None:
        doc, index = self.document, event.index
        conditions = doc.conditions()
        if event.op == "add":
            self.app.push_screen(ConditionDialog(title="Add condition"),
                                 lambda c: c and self._after(doc.add_condition(c)))
        elif event.op == "edit" and 0 <= index < len(conditions):
            self.app.push_screen(
                ConditionDialog(conditions[index], title=f"Edit condition {index + 1}"),
                lambda c: c and self._after(doc.replace_condition(index, c) or index))
        elif event.op == "duplicate":
            self._after(doc.duplicate_condition(index))
        elif event.op == "delete" and 0 <= index < len(conditions):
            label = self.query_one(ConditionsEditor).label(index)
            self.app.push_screen(
                ConfirmDialog(f"Delete condition {index + 1}?", f"{label} and its runs leave "
                              "the campaign.", yes="Delete", danger=True),
                lambda yes: yes and self._delete_condition(index))
        elif event.op in ("up", "down"):
            self._after(doc.move_condition(index, -1 if event.op == "up" else 1))

    def _delete_condition(self, index: int) -> None:
        last = index >= len(self.document.conditions()) - 1
        self.document.remove_condition(index)
        self._after(max(0, index - 1) if last else index)

    def _after(self, cursor: int | None) -> None:
        self.refresh_views(cursor)

    @on(TextArea.Changed, "#base-toml")
    @guarded
    def _base_changed(self, event: TextArea.Changed) -> None:
        self.document.set_base_text(event.text_area.text)
        self.refresh_views()

    @on(PlanPanel.InputsChanged)
    def _plan_inputs(self, event: PlanPanel.InputsChanged) -> None:
        self.schedule_plan()

    @on(ProblemsList.Jump)
    @guarded
    def _jump(self, event: ProblemsList.Jump) -> None:
        key = event.key
        if key.startswith("campaign."):
            self.query_one(TabbedContent).active = "tab-campaign"
            field = key.split(".", 1)[1].split("[")[0]
            target = {"seeds": "#seed-list", "conditions": "#condition-table"}.get(
                field, f"#field-{field}")
            if self.query(target):
                self.query_one(target).focus()
            return
        line = self.document.base_line_offset(event.line) if event.line else None
        self.query_one(TabbedContent).active = "tab-base"
        area = self.query_one("#base-toml", TextArea)
        if line:
            area.move_cursor((line - 1, 0), center=True)
        area.focus()

    # -- actions --------------------------------------------------------------------------
    def action_toggle_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "tab-base" if tabs.active == "tab-campaign" else "tab-campaign"
        # Focus goes with the tab: left on a widget of the hidden pane, Textual would move
        # it to that pane's next widget and the tabs would switch straight back.
        self.query_one("#base-toml" if tabs.active == "tab-base" else "#condition-table").focus()

    def action_toggle_tab_indent(self) -> None:
        # Tab moves focus by default: a keyboard user must be able to leave the editor.
        area = self.query_one("#base-toml", TextArea)
        area.tab_behavior = "focus" if area.tab_behavior == "indent" else "indent"
        self.app.notify("Tab inserts indentation in the TOML editor (f2 to undo)"
                        if area.tab_behavior == "indent" else "Tab moves focus again")

    def action_save(self) -> bool:
        try:
            self.document.save()
        except OSError as exc:
            self.app.notify(f"save failed: {exc}", severity="error")
            return False
        self.refresh_views()
        self.app.notify(f"saved {self.document.path.name}")
        return True

    @guarded
    def action_launch(self) -> None:
        if self.campaign is None or self.problems:
            self.app.notify(f"cannot launch: {len(self.problems)} problem(s) in the config",
                            severity="error", title="Launch blocked")
            return
        camp = self.campaign
        body = (f"{len(camp.conditions)} conditions × {len(camp.settings.seeds)} seeds = "
                f"{len(camp.runs)} runs\nparallel: {camp.settings.parallel}, max_workers: "
                f"{camp.settings.max_workers or 'all'}\nlogs: {self.app.logs_dir}")
        if self.document.dirty:
            body += f"\n{self.document.path.name} will be saved first."
        self.app.push_screen(ConfirmDialog("Launch this campaign?", body, yes="Launch"),
                             self._launch_confirmed)

    @guarded
    def _launch_confirmed(self, yes: bool | None) -> None:
        if not yes or (self.document.dirty and not self.action_save()):
            return
        self._launch(self.document.path)

    @work(thread=True, exclusive=True, group="launch")
    def _launch(self, path: Path) -> None:
        from retrain_core.supervisor import api

        try:
            directory = api.launch(path, logs_dir=self.app.logs_dir)
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self.app.notify, f"launch failed: {exc}",
                                      severity="error", title="Launch")
            return
        self.app.call_from_thread(self.app.open_monitor, directory, True, True)

    @guarded
    def action_external_editor(self) -> None:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        doc = self.document
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False,
                                         prefix=f"{doc.path.stem}.") as fh:
            fh.write(doc.full_text())
        try:
            with self.app.suspend():
                subprocess.call([*shlex.split(editor), fh.name])
            text = Path(fh.name).read_text(encoding="utf-8")
        except Exception as exc:  # noqa: BLE001
            self.app.notify(f"$EDITOR failed: {exc}", severity="error")
            return
        finally:
            Path(fh.name).unlink(missing_ok=True)
        if text != doc.full_text():
            self.load_text(text, original=doc.original_text)

    def action_quit(self) -> None:
        self._leave(self.app.exit)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self._leave(self.app.pop_screen)

    def _leave(self, then) -> None:
        if not self.document.dirty:
            then()
            return
        self.app.push_screen(
            ConfirmDialog("Discard unsaved changes?", f"{self.document.path.name} has edits "
                          "that are not saved.", yes="Discard", danger=True),
            lambda yes: yes and then())
