"""retrain-tui: edit, plan, launch and monitor RL fine-tuning campaigns.

`retrain-tui CONFIG.toml` opens the editor, `retrain-tui logs/campaign_…` attaches the
monitor, `retrain-tui` (or `retrain-tui logs/`) lists campaigns and configs. The app is a
view and a remote control: process work goes through `retrain_core.supervisor.api`, and
quitting never stops a campaign.
"""

from __future__ import annotations

import argparse
import io
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from rich.console import Console
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from retrain_tui.screens.help import HelpScreen


def is_campaign_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").exists() or (path / "manifest.json").exists())


class RetrainApp(App):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "retrain-tui"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("question_mark", "help", "Keys", id="help",
                tooltip="Every key of this screen, with what it does"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", show=False,
                tooltip="Leave retrain-tui; a campaign keeps running"),
    ]

    def __init__(self, target: str | Path | None = None, logs_dir: str | Path = "logs",
                 clock: Callable[[], float] = time.time, poll_interval: float = 0.5,
                 strict: bool = False, start_watchers: bool = True):
        super().__init__()
        self.target = Path(target) if target else None
        self.logs_dir = Path(logs_dir)
        self.clock = clock  # tests and snapshots freeze it
        self.poll_interval = poll_interval
        self.strict = strict  # tests: let exceptions fail loudly
        self.start_watchers = start_watchers
        self.campaign_dir: Path | None = None  # the last campaign shown, for `farewell`
        self.fatal_error = ""  # set by `run`: the error no handler caught, in one line

    def on_mount(self) -> None:
        target = self.target
        if target is None:
            self.open_picker(self.logs_dir)
        elif target.is_file() or target.suffix == ".toml":
            self.open_editor(target)
        elif is_campaign_dir(target):
            self.open_monitor(target)
        else:
            self.open_picker(target if target.is_dir() else self.logs_dir)

    # -- navigation -------------------------------------------------------------------------
    def _show(self, screen: Screen, replace: bool) -> None:
        if replace and len(self.screen_stack) > 1:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def open_picker(self, logs_dir: Path) -> None:
        from retrain_tui.screens.picker import PickerScreen

        self._show(PickerScreen(logs_dir), False)

    def open_editor(self, path: Path, replace: bool = False) -> None:
        from retrain_tui.screens.editor import EditorScreen

        self._show(EditorScreen(path), replace)

    def open_monitor(self, directory: Path, replace: bool = False,
                     launched: bool = False) -> None:
        from retrain_tui.screens.monitor import MonitorScreen

        self.campaign_dir = Path(directory)
        self._show(MonitorScreen(Path(directory), launched=launched), replace)

    def farewell(self) -> str:
        """What the terminal shows after the app closes: where the campaign is and how to
        come back to it (quitting never stops it)."""
        if self.campaign_dir is None:
            return ""
        shown = _relative(self.campaign_dir)
        from retrain_tui.watcher import supervisor_api

        try:
            alive = bool(supervisor_api().supervisor_alive(self.campaign_dir))
        except Exception:  # noqa: BLE001 - a farewell must not fail
            alive = False
        state = "still running" if alive else "not running"
        return (f"campaign {shown} ({state})\n"
                f"re-attach: retrain-tui {shlex.quote(shown)}\n"
                f"status:    retrain status {shlex.quote(shown)}")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_quit(self) -> None:
        quit_action = getattr(self.screen, "action_quit", None)
        if quit_action is not None:
            quit_action()  # the editor asks about unsaved changes first
        else:
            self.exit()

    # -- command palette --------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own (theme, screenshot, maximize) and every action of the screen once:
        its Quit asks about unsaved changes and its Keys is our help screen, so Textual's
        commands of those names are left out."""
        from retrain_tui.commands import palette_commands

        ours = palette_commands(screen)
        titles = {title for title, _, _ in ours} | {"Keys", "Quit"}
        for command in super().get_system_commands(screen):
            if command.title not in titles:
                yield command
        for title, help_text, callback in ours:
            yield SystemCommand(title, help_text, callback)

    # -- errors -----------------------------------------------------------------------------
    def run(self, *args, **kwargs):
        """Run the app (Textual's `App.run`). An error no handler caught (handlers are
        `guarded`) ends it with `fatal_error`, one line, never a traceback on the terminal;
        any campaign keeps running. Textual has no public hook for such errors: it closes the
        app with return code 1 and prints a traceback on its public `error_console` once the
        terminal is restored. That console is pointed at a buffer here (plain text: no
        terminal, so no colour codes) and the traceback summed up by the exception's own line
        (docs/ARCHITECTURE.md, "TUI streams and errors"); anything else printed there is
        passed on to stderr whole."""
        if self.strict:  # tests: let the traceback through
            return super().run(*args, **kwargs)
        printed = io.StringIO()
        self.error_console = Console(file=printed, markup=False, highlight=False, width=160)
        result = super().run(*args, **kwargs)
        if self.return_code and printed.getvalue():
            self.fatal_error = exception_line(printed.getvalue())
        elif printed.getvalue():
            sys.stderr.write(printed.getvalue())
        return result


def exception_line(traceback_text: str) -> str:
    """The exception line(s) of a Rich traceback, joined into one: what follows the last frame
    box (`╰───╯`) up to the first blank line (the note on further errors)."""
    lines = traceback_text.splitlines()
    last_box = max((i for i, line in enumerate(lines) if line.lstrip().startswith("╰")),
                   default=-1)
    words: list[str] = []
    for line in lines[last_box + 1:]:
        if not line.strip():
            if words:
                break
            continue
        words.append(line.strip())
    return " ".join(words) or "the app stopped on an error it did not catch"


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrain-tui", description=__doc__.split("\n")[0])
    parser.add_argument("target", nargs="?", help="CONFIG.toml, a campaign dir, or a logs dir")
    parser.add_argument("--logs-dir", default="logs",
                        help="where campaigns are launched and looked for (default: logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = Path(args.target) if args.target else None
    logs_dir = Path(args.logs_dir)
    if target is not None and target.is_dir() and not is_campaign_dir(target):
        logs_dir = target
    try:
        app = RetrainApp(target, logs_dir=logs_dir)
        app.run()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback on the user's terminal
        print(f"retrain-tui: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    note = app.farewell()
    if note:
        print(note)
    if getattr(app, "fatal_error", ""):
        print(f"retrain-tui: {app.fatal_error} (any campaign keeps running)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
