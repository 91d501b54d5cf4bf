"""Add or edit one condition: advantage and transform modes (a built-in or a dotted plugin
path) and its overrides of the base config, written as an inline-table body."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Static

from retrain_core.config.schema import ADVANTAGE_MODES, TRANSFORM_MODES
from retrain_tui.toml_values import format_overrides, parse_overrides


class ConditionDialog(ModalScreen[dict | None]):
    """Dismisses with the condition dict, or None when cancelled."""

    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "cancel", "Cancel", id="condition.cancel",
                tooltip="Close without changing the condition")]

    def __init__(self, condition: dict | None = None, title: str = "Condition"):
        super().__init__(classes="dialog-screen")
        self._condition = dict(condition or {"advantage_mode": "maxrl", "transform_mode": "none"})
        self._title = title

    def compose(self) -> ComposeResult:
        cond = self._condition
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            yield Label(f"advantage_mode ({', '.join(ADVANTAGE_MODES)} or module.path)")
            yield Input(str(cond.get("advantage_mode", "")), id="advantage_mode",
                        suggester=SuggestFromList(ADVANTAGE_MODES, case_sensitive=False))
            yield Label(f"transform_mode ({', '.join(TRANSFORM_MODES)} or module.path)")
            yield Input(str(cond.get("transform_mode", "")), id="transform_mode",
                        suggester=SuggestFromList(TRANSFORM_MODES, case_sensitive=False))
            yield Label("overrides (e.g. sepa.steps = 100, lr = 1e-5)")
            yield Input(format_overrides(cond), id="overrides")
            yield Static("", id="condition-error", classes="error-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#advantage_mode", Input).focus()

    def _result(self) -> dict | None:
        adv = self.query_one("#advantage_mode", Input).value.strip()
        trans = self.query_one("#transform_mode", Input).value.strip()
        error = self.query_one("#condition-error", Static)
        if not adv or not trans:
            error.update("advantage_mode and transform_mode are required")
            return None
        try:
            overrides = parse_overrides(self.query_one("#overrides", Input).value)
        except ValueError as exc:
            error.update(str(exc))
            self.query_one("#overrides", Input).add_class("-invalid")
            return None
        return {"advantage_mode": adv, "transform_mode": trans, **overrides}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._accept()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self._accept()
        else:
            self.dismiss(None)

    def _accept(self) -> None:
        result = self._result()
        if result is not None:
            self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)
