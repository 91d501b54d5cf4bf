"""The resources screen (`G` in the monitor): the resources panel, sampled every 2 s in a
worker thread (psutil and NVML calls never run on the UI thread)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header

from retrain_core.resources import ResourceSampler, running_runs
from retrain_core.supervisor.api import read_state
from retrain_tui.widgets.resources import ResourcesPanel

SAMPLE_S = 2.0


class ResourcesScreen(Screen):
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("question_mark", "app.help", "Keys", id="help",
                tooltip="Every key of this screen, with what it does"),
        Binding("escape,G", "back", "Back", id="back", tooltip="Return to the monitor"),
        Binding("q", "quit", "Quit", id="quit",
                tooltip="Leave retrain-tui; the campaign keeps running"),
    ]

    def __init__(self, directory: Path, sampler: ResourceSampler | None = None):
        super().__init__()
        self.directory = Path(directory)
        self.sampler = sampler

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◉")
        with VerticalScroll():
            yield ResourcesPanel(id="resources-panel")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "retrain-tui · resources"
        self.sub_title = self.directory.name
        self.query_one(ResourcesPanel).show(None)
        self.sample()
        if self.app.start_watchers:
            self.set_interval(SAMPLE_S, self.sample)

    @work(thread=True, exclusive=True, group="resources")
    def sample(self) -> None:
        if self.sampler is None:
            self.sampler = ResourceSampler()
        res = self.sampler.sample(running_runs(read_state(self.directory)))
        self.app.call_from_thread(self.query_one(ResourcesPanel).show, res)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_quit(self) -> None:
        self.app.exit()
