"""The picker: campaigns found under the logs directory (newest first, with a status
summary) and campaign configs nearby. Enter opens the monitor or the editor."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option


def find_configs(roots: list[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found += sorted(p for p in root.glob("*.toml") if p.name != "pyproject.toml")
    return list(dict.fromkeys(found))


def campaign_summary(directory: Path) -> str:
    from retrain_tui.watcher import supervisor_api

    api = supervisor_api()
    try:
        runs = (api.read_state(directory) or {}).get("runs") or {}
    except Exception:  # noqa: BLE001
        return "unreadable state.json"
    counts: dict[str, int] = {}
    for run in runs.values():
        status = run.get("status", "?") if isinstance(run, dict) else "?"
        counts[status] = counts.get(status, 0) + 1
    try:
        alive = api.supervisor_alive(directory)
    except Exception:  # noqa: BLE001
        alive = False
    text = " ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs"
    return f"{'● live' if alive else '○ ended'}  {text}"


class PickerScreen(Screen):
    DEFAULT_CSS = """
    #picker-hint { height: auto; padding: 0 1; }
    #picker-list { height: 1fr; }
    """
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("r", "rescan", "Rescan", id="rescan",
                tooltip="Look for campaigns and configs again"),
        Binding("question_mark", "app.help", "Keys", id="help",
                tooltip="Every key of this screen, with what it does"),
        Binding("q", "quit", "Quit", id="quit",
                tooltip="Leave retrain-tui; a campaign keeps running"),
    ]

    def __init__(self, logs_dir: Path):
        super().__init__()
        self.logs_dir = Path(logs_dir)
        self._targets: list[tuple[str, Path]] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="⚙")
        yield Static(f"Campaigns under {self.logs_dir}/ and configs nearby; enter opens.",
                     id="picker-hint", markup=False)
        yield OptionList(id="picker-list")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "retrain-tui"
        self.sub_title = "open a campaign or a config"
        self.action_rescan()

    @work(thread=True, exclusive=True, group="picker")
    def action_rescan(self) -> None:
        from retrain_tui.watcher import supervisor_api

        api = supervisor_api()
        try:
            campaigns = list(api.find_campaigns(self.logs_dir))
        except Exception:  # noqa: BLE001
            root = self.logs_dir
            campaigns = sorted((p for p in root.glob("campaign_*") if p.is_dir()),
                               reverse=True) if root.is_dir() else []
        items = [("monitor", c, f"◉ {c.name}  {campaign_summary(c)}") for c in campaigns]
        configs = find_configs([Path.cwd(), Path.cwd() / "configs"])
        items += [("editor", p, f"⚙ {p.relative_to(Path.cwd())}") for p in configs]
        self.app.call_from_thread(self._show, items)

    def _show(self, items) -> None:
        view = self.query_one(OptionList)
        view.clear_options()
        self._targets = [(kind, path) for kind, path, _ in items]
        for _, _, text in items:
            view.add_option(Option(text))
        if not items:
            view.add_option(Option("nothing found: run `retrain-tui CONFIG.toml`",
                                   disabled=True))
        else:
            view.highlighted = 0
        view.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        kind, path = self._targets[event.option_index]
        if kind == "monitor":
            self.app.open_monitor(path)
        else:
            self.app.open_editor(path)

    def action_quit(self) -> None:
        self.app.exit()
