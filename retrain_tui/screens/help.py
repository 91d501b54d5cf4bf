"""The help screen: every key binding of the screen underneath, with its id and description."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Label


def binding_rows(screen: Screen) -> list[tuple[str, str, str]]:
    """(key, id, description) of the screen's and the app's bindings, de-duplicated."""
    rows, seen = [], set()
    for source in (screen, screen.app):
        for binding in getattr(source, "BINDINGS", []):
            if not isinstance(binding, Binding) or binding.key in seen:
                continue
            seen.add(binding.key)
            key = binding.key_display or screen.app.get_key_display(binding)
            rows.append((key, binding.id or binding.action, binding.description))
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[Binding]] = [Binding("escape,question_mark,q", "dismiss_help", "Close", id="help.close")]

    def __init__(self, under: Screen):
        super().__init__(classes="dialog-screen")
        self._rows = binding_rows(under)
        self._title = f"Keys — {type(under).__name__.removesuffix('Screen').lower()}"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help-dialog"):
            yield Label(self._title, classes="dialog-title")
            table = DataTable(id="help-table", cursor_type="row", show_cursor=False)
            table.add_columns("key", "id", "action")
            for row in self._rows:
                table.add_row(*row)
            yield table
            yield Label("ctrl+p: command palette · quitting never stops a campaign",
                        classes="dialog-hint")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
