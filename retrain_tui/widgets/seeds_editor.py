"""The campaign's seeds as an editable list: add, edit (set), remove."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Input, Label, ListItem, ListView

from retrain_tui.widgets.campaign_fields import format_value, parse_value


class SeedsEditor(Widget):
    DEFAULT_CSS = """
    SeedsEditor { height: auto; }
    #seed-list {
        height: auto;
        max-height: 5;
        layout: grid;
        grid-size: 8;
        grid-gutter: 0 1;
    }
    .seed-item { width: 100%; }
    .seed-controls { height: 1; }
    .seed-controls Input { width: 16; }
    .seed-controls Button { margin-left: 1; min-width: 5; }
    """
    BINDINGS: ClassVar[list[Binding]] = [Binding("delete", "remove_seed", "Remove seed", id="seeds.remove", show=False,
                tooltip="Remove the selected seed")]

    class Changed(Message):
        """op is "add", "set" or "remove"; index is the seed's position (add: None)."""

        def __init__(self, op: str, index: int | None, value: Any = None):
            super().__init__()
            self.op, self.index, self.value = op, index, value

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._seeds: list[Any] = []

    def compose(self) -> ComposeResult:
        yield Label("seeds", classes="section-label")
        yield ListView(id="seed-list")
        with Horizontal(classes="seed-controls"):
            yield Input(id="seed-input", placeholder="seed", compact=True)
            yield Button("Add", id="seed-add", compact=True)
            yield Button("Set", id="seed-set", compact=True)
            yield Button("Remove", id="seed-remove", compact=True)

    @property
    def seeds(self) -> list[Any]:
        return list(self._seeds)

    def load(self, seeds: list[Any]) -> None:
        if seeds == self._seeds:
            return
        self._seeds = list(seeds)
        view = self.query_one("#seed-list", ListView)
        index = view.index
        view.clear()
        view.extend(ListItem(Label(format_value(s)), classes="seed-item") for s in seeds)
        if seeds:
            view.index = min(index or 0, len(seeds) - 1)

    def mark(self, bad: bool) -> None:
        self.query_one("#seed-list").set_class(bad, "-invalid")

    def on_list_view_highlighted(self, event: ListView.Highlighted) -> None:
        event.stop()
        index = event.list_view.index
        if index is not None and 0 <= index < len(self._seeds):
            with self.prevent(Input.Changed):
                self.query_one("#seed-input", Input).value = format_value(self._seeds[index])

    def _typed(self) -> Any:
        return parse_value(self.query_one("#seed-input", Input).value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        {"seed-add": self.action_add_seed, "seed-set": self.action_set_seed,
         "seed-remove": self.action_remove_seed}[event.button.id]()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_add_seed()

    def action_add_seed(self) -> None:
        value = self._typed()
        if value is None:
            self.app.notify("type a seed first", severity="warning")
            return
        self.post_message(self.Changed("add", None, value))

    def action_set_seed(self) -> None:
        index = self.query_one("#seed-list", ListView).index
        value = self._typed()
        if index is not None and value is not None:
            self.post_message(self.Changed("set", index, value))

    def action_remove_seed(self) -> None:
        index = self.query_one("#seed-list", ListView).index
        if index is not None and 0 <= index < len(self._seeds):
            self.post_message(self.Changed("remove", index))
