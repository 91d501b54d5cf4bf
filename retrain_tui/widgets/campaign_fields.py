"""The scalar `[campaign]` fields: max_steps, parallel, max_workers, stagger_seconds,
max_retries. Each edit is posted as `CampaignFields.Changed(key, value)`; the value is the
TOML value typed (an unparseable entry is passed on as a string so that validation names
the key and the expected type), or None when the field is emptied (the default applies)."""

from __future__ import annotations

from typing import Any

import tomlkit
from textual.app import ComposeResult
from textual.containers import Grid
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label

from retrain_tui.toml_values import to_plain

NUMERIC_FIELDS = ("max_steps", "max_workers", "stagger_seconds", "max_retries")
PLACEHOLDERS = {"max_steps": "[training].max_steps", "max_workers": "all runs",
                "stagger_seconds": "0.0", "max_retries": "0"}


def parse_value(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return to_plain(tomlkit.parse(f"v = {text}")["v"])
    except Exception:  # noqa: BLE001
        return text


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return str(value)


class CampaignFields(Widget):
    DEFAULT_CSS = """
    CampaignFields { height: auto; }
    #campaign-grid {
        grid-size: 2;
        grid-columns: 16 1fr;
        grid-rows: 1;
        grid-gutter: 0 1;
        height: auto;
        margin-top: 1;
    }
    #campaign-grid Checkbox { height: 1; width: 100%; }
    .field-label { color: $text-muted; }
    """
    class Changed(Message):
        def __init__(self, key: str, value: Any):
            super().__init__()
            self.key, self.value = key, value

    def compose(self) -> ComposeResult:
        with Grid(id="campaign-grid"):
            yield Label("parallel", classes="field-label")
            yield Checkbox("", id="field-parallel", compact=True)
            for key in NUMERIC_FIELDS:
                yield Label(key, classes="field-label")
                yield Input(id=f"field-{key}", placeholder=PLACEHOLDERS[key], compact=True)

    def load(self, values: dict) -> None:
        """Show the document's values without echoing Changed messages back."""
        with self.prevent(Input.Changed, Checkbox.Changed):
            self.query_one("#field-parallel", Checkbox).value = bool(values.get("parallel"))
            for key in NUMERIC_FIELDS:
                widget = self.query_one(f"#field-{key}", Input)
                text = format_value(values.get(key))
                if widget.value != text and not widget.has_focus:
                    widget.value = text

    def mark(self, bad_keys: set[str]) -> None:
        for key in ("parallel",) + NUMERIC_FIELDS:
            self.query_one(f"#field-{key}").set_class(key in bad_keys, "-invalid")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        key = (event.input.id or "").removeprefix("field-")
        self.post_message(self.Changed(key, parse_value(event.value)))

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self.post_message(self.Changed("parallel", bool(event.value)))
