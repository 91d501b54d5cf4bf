"""One list of what the user can do on a screen: its key bindings, those of our widgets on
it and the app's. The footer, the help screen and the command palette all read the same
bindings, so an action has one name (the binding's description) and one explanation (its
tooltip) everywhere, and the palette lists each action exactly once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.binding import Binding
from textual.dom import DOMNode
from textual.screen import Screen


@dataclass
class Action:
    keys: str  # as displayed: "ctrl+s", "q / ctrl+q"
    name: str  # the binding's description: "Save"
    description: str  # the binding's tooltip: what it does, in a sentence
    binding_id: str
    target: DOMNode
    action: str  # the action string, run on `target`

    def run(self):
        return self.target.run_action(self.action)


def _sources(screen: Screen) -> list[DOMNode]:
    """The screen, our widgets on it that have their own keys, then the app."""
    widgets = [w for w in screen.query("*")
               if type(w).__module__.startswith("retrain_tui.") and "BINDINGS" in vars(type(w))]
    return [screen, *widgets, screen.app]


def _key_display(screen: Screen, binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    return " / ".join(screen.app.get_key_display(Binding(key.strip(), binding.action))
                      for key in binding.key.split(","))


def screen_actions(screen: Screen) -> list[Action]:
    """Every action reachable on `screen`, once each: bindings with the same description
    (the screen's `q` and the app's `ctrl+q` for Quit) are one action with both keys. An
    action the screen currently disables (`check_action` says no) is left out."""
    actions: dict[str, Action] = {}
    for source in _sources(screen):
        for binding in getattr(type(source), "BINDINGS", []):
            if not isinstance(binding, Binding):
                continue
            keys = _key_display(screen, binding)
            known = actions.get(binding.description)
            if known is not None:
                if keys not in known.keys.split(" / "):
                    known.keys += f" / {keys}"
                continue
            name = binding.action.split("(", 1)[0].removeprefix("app.")
            if source is screen and screen.check_action(name, ()) is False:
                continue
            actions[binding.description] = Action(keys, binding.description, binding.tooltip,
                                                  binding.id or binding.action, source,
                                                  binding.action)
    return list(actions.values())


def palette_commands(screen: Screen) -> list[tuple[str, str, Callable]]:
    """(title, help, callback) for the command palette: every action of `screen_actions`,
    then the screen's extra commands that have no key (`extra_commands`)."""
    commands = [(a.name, f"{a.description} ({a.keys})", a.run) for a in screen_actions(screen)
                if a.action != "command_palette"]
    extra = getattr(screen, "extra_commands", None)
    if extra is not None:
        commands += list(extra())
    return commands
