"""A plotext line plot of one metric per series over steps (the monitor: mean across seeds
per condition; the run detail: a run's own metrics).

Building a plotext figure costs tens of milliseconds, so it never happens on the UI
thread: a worker thread builds the figure (a fresh plotext figure per build) into text and
the widget only shows that text. New data is drawn at most once per `min_interval`
seconds; in between only the newest data is kept.
"""

from __future__ import annotations

import math
import time

from rich.text import Text
from textual import work
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot


def build_figure(width: int, height: int, theme: str, metric: str, title: str,
                 series: dict) -> Text:
    plt = Plot()
    plt.plotsize(width, height)
    plt._set_size(width, height)  # see textual-plotext issue #5: plotsize alone is not enough
    plt.theme(theme)
    plt.title(title or f"{metric} (mean over seeds)")
    plt.xlabel("step")
    any_data = False
    for label, (steps, values) in series.items():
        points = [(s, v) for s, v in zip(steps, values) if not math.isnan(v)]
        if points:
            xs, ys = zip(*points)
            plt.plot(list(xs), list(ys), label=label[:24])
            any_data = True
    if not any_data:
        plt.title(f"{metric}: no data yet")
    return Text.from_ansi(plt.build())


class MetricPlot(PlotextPlot):
    def __init__(self, min_interval: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.min_interval = min_interval
        self._shown = None  # signature of the data last sent to a build
        self._data = None  # (metric, series, title) of the last build
        self._pending = None
        self._last_draw = -math.inf
        self._timer = None
        self._text: Text | None = None
        self._text_key = None

    def show(self, metric: str, series: dict[str, tuple[list, list]], title: str = "") -> None:
        """series: label -> (steps, values); redraws only when the data changed."""
        signature = (metric, title, tuple((k, len(v[0]), v[0][-1] if v[0] else None,
                                           v[1][-1] if v[1] else None)
                                          for k, v in series.items()))
        if signature == self._shown:
            return
        self._pending = (signature, (metric, series, title))
        wait = self._last_draw + self.min_interval - time.monotonic()
        if wait <= 0 or self._shown is None:
            self._draw_pending()
        elif self._timer is None:
            self._timer = self.set_timer(wait, self._draw_pending)

    def _draw_pending(self) -> None:
        self._timer = None
        if self._pending is None:
            return
        (self._shown, self._data), self._pending = self._pending, None
        self._last_draw = time.monotonic()
        self._request_build()

    def _request_build(self) -> None:
        if self._data is None or not self.size.width or not self.size.height:
            return
        key = (self._shown, self.size, self.app.theme)
        if key != self._text_key:
            theme = self._get_plotext_theme_name(self.app.theme)
            self._build(key, self.size.width, self.size.height, theme, *self._data)

    @work(thread=True, exclusive=True, group="plot-build")
    def _build(self, key, width, height, theme, metric, series, title) -> None:
        text = build_figure(width, height, theme, metric, title, series)
        self.app.call_from_thread(self._built, key, text)

    def _built(self, key, text: Text) -> None:
        self._text, self._text_key = text, key
        self.refresh()

    def on_resize(self) -> None:
        self._request_build()

    def render(self):
        return self._text if self._text is not None else Text("")
