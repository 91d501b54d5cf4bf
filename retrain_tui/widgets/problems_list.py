"""Validation problems, one per line with its line number and dotted key. Selecting one
posts `ProblemsList.Jump` so the editor can focus the offending field."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option


class ProblemsList(OptionList):
    class Jump(Message):
        def __init__(self, line: int, key: str):
            super().__init__()
            self.line, self.key = line, key

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._problems: list | None = None

    def show(self, problems: list) -> None:
        if self._problems is not None and [(p.line, p.key, p.message) for p in problems] == [
                (p.line, p.key, p.message) for p in self._problems]:
            return
        self._problems = list(problems)
        self.clear_options()
        for i, p in enumerate(problems):
            where = f"L{p.line}" if p.line else "file"
            key = f" {p.key}:" if p.key else ""
            # Text, not a markup string: `unknown key in [sepa]` must keep its `[sepa]`.
            self.add_option(Option(Text(f"✗ {where}{key} {p.message}"), id=f"problem-{i}"))
        if not problems:
            self.add_option(Option("✓ valid: no problems", id="problem-none", disabled=True))
        self.set_class(not problems, "-empty")
        self.border_title = f"{len(problems)} problem(s)" if problems else "valid"

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if not self._problems:
            return
        p = self._problems[event.option_index]
        self.post_message(self.Jump(p.line, p.key))
