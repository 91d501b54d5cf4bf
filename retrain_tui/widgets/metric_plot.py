"""A plotext line plot of one metric per condition over steps (mean across seeds)."""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot


class MetricPlot(PlotextPlot):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._shown = None

    def show(self, metric: str, series: dict[str, tuple[list, list]], title: str = "") -> None:
        """series: label -> (steps, values); redraws only when the data changed."""
        signature = (metric, tuple((k, len(v[0]), v[0][-1] if v[0] else None,
                                    v[1][-1] if v[1] else None) for k, v in series.items()))
        if signature == self._shown:
            return
        self._shown = signature
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
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
        self.refresh()
