"""The conditions table: add, duplicate, edit, delete, reorder."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, DataTable, Label

from retrain_tui.stats import ellipsize
from retrain_tui.toml_values import format_overrides

# Widest label and overrides cells; longer ones end with an ellipsis (the dialog shows all).
LABEL_WIDTH = 30
OVERRIDES_WIDTH = 30


class ConditionsEditor(Widget):
    DEFAULT_CSS = """
    ConditionsEditor { height: auto; }
    .condition-controls { height: 1; }
    .condition-controls Button { margin-left: 1; min-width: 5; }
    #condition-table { height: auto; max-height: 10; }
    """
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("a", "op('add')", "Add condition", id="conditions.add", show=False,
                tooltip="Add a condition after the last one"),
        Binding("d", "op('duplicate')", "Duplicate condition", id="conditions.duplicate",
                show=False, tooltip="Copy the selected condition below it"),
        Binding("delete", "op('delete')", "Delete condition", id="conditions.delete",
                show=False, tooltip="Remove the selected condition (asks first)"),
        Binding("e", "op('edit')", "Edit condition", id="conditions.edit", show=False,
                tooltip="Change the selected condition's modes and overrides"),
        Binding("ctrl+up", "op('up')", "Move condition up", id="conditions.up", show=False,
                tooltip="Swap the selected condition with the one above"),
        Binding("ctrl+down", "op('down')", "Move condition down", id="conditions.down",
                show=False, tooltip="Swap the selected condition with the one below"),
    ]

    class Requested(Message):
        """The user asked for `op` (add/duplicate/edit/delete/up/down) on row `index`."""

        def __init__(self, op: str, index: int):
            super().__init__()
            self.op, self.index = op, index

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._rows: list[tuple] = []
        self._labels: list[str] = []  # in full, for the dialogs

    def compose(self) -> ComposeResult:
        yield Label("conditions", classes="section-label")
        table = DataTable(id="condition-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("#", "label", "advantage", "transform", "overrides")
        yield table
        with Horizontal(classes="condition-controls"):
            for op, text in (("add", "Add"), ("duplicate", "Dup"), ("edit", "Edit"),
                             ("delete", "Del"), ("up", "▲"), ("down", "▼")):
                yield Button(text, id=f"cond-{op}", compact=True)

    @property
    def cursor(self) -> int:
        return self.query_one("#condition-table", DataTable).cursor_row

    def load(self, conditions: list[dict], labels: list[str] | None, cursor: int | None = None
             ) -> None:
        rows, self._labels = [], []
        for i, cond in enumerate(conditions):
            label = labels[i] if labels and i < len(labels) else (
                f"{cond.get('advantage_mode', '?')}+{cond.get('transform_mode', '?')}")
            self._labels.append(label)
            rows.append((str(i + 1), ellipsize(label, LABEL_WIDTH),
                         str(cond.get("advantage_mode", "")), str(cond.get("transform_mode", "")),
                         ellipsize(format_overrides(cond), OVERRIDES_WIDTH)))
        table = self.query_one("#condition-table", DataTable)
        if rows != self._rows:
            keep = table.cursor_row if cursor is None else cursor
            self._rows = rows
            table.clear()
            for row in rows:
                table.add_row(*row)
            if rows:
                table.move_cursor(row=max(0, min(keep, len(rows) - 1)), animate=False)
        elif cursor is not None:
            table.move_cursor(row=cursor, animate=False)

    def label(self, index: int) -> str:
        return self._labels[index] if 0 <= index < len(self._labels) else f"condition {index + 1}"

    def mark(self, bad_rows: set[int], whole: bool = False) -> None:
        self.query_one("#condition-table").set_class(bool(bad_rows) or whole, "-invalid")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_op((event.button.id or "").removeprefix("cond-"))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_op("edit")

    def action_op(self, op: str) -> None:
        self.post_message(self.Requested(op, self.cursor))
