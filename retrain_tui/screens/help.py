"""The help screen: every key of the screen underneath, with its action and what it does
(the same list the command palette shows; see `retrain_tui.commands`)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Label

from retrain_tui.commands import screen_actions


def binding_rows(screen: Screen) -> list[tuple[str, str, str]]:
    """(key, action, description) of every action of `screen`, once each."""
    return [(a.keys, a.name, a.description) for a in screen_actions(screen)]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    #help-table { height: auto; max-height: 20; }
    """
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape,question_mark,q", "dismiss_help", "Close", id="help.close",
                tooltip="Close this list"),
    ]

    def __init__(self, under: Screen):
        super().__init__(classes="dialog-screen")
        self._rows = binding_rows(under)
        self._title = f"Keys — {type(under).__name__.removesuffix('Screen').lower()}"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help-dialog"):
            yield Label(self._title, classes="dialog-title")
            table = DataTable(id="help-table", cursor_type="row", show_cursor=False)
            table.add_columns("key", "action", "description")
            for row in self._rows:
                table.add_row(*row)
            yield table
            yield Label("ctrl+p: command palette · quitting never stops a campaign",
                        classes="dialog-hint")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
