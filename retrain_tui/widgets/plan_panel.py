"""The plan panel: run matrix, totals and the capacity estimate with its source.

The panel only shows; the editor screen computes the estimate (in a worker: looking for
pilot runs walks the logs directory) and calls `show_plan`. Choosing a GPU preset or typing
a step time posts `PlanPanel.InputsChanged`.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static

from retrain_tui.stats import format_duration

GPU_CHOICES = [("H100", "h100"), ("A100", "a100"), ("RTX 4090", "4090"), ("CPU", "cpu")]


def _hours(hours: float | None) -> str:
    return "unknown" if hours is None else format_duration(hours * 3600)


def plan_text(campaign, estimate: dict | None, defaults: list[str] = ()) -> str:
    """Plain text of the plan (also used by tests); `defaults` are the gaps of the file
    that defaults fill (`retrain_core.config.defaults.filled_defaults`)."""
    if campaign is None:
        return "fix the problems below to see the plan"
    seeds = list(campaign.settings.seeds)
    labels = [c.label for c in campaign.conditions]
    lines = [f"{len(labels)} conditions × {len(seeds)} seeds = {len(campaign.runs)} runs"]
    lines += [f"default: {note}" for note in defaults]
    lines.append("seeds: " + ", ".join(str(s) for s in seeds))
    lines += [f" {i + 1}. {label}" for i, label in enumerate(labels)]
    if estimate:
        e = estimate
        lines += [
            "",
            f"steps total      {e['total_steps']:,}",
            f"completions/step {e['completions_per_step']:,}",
            f"tokens/step  ≤   {e['token_budget_per_step']:,}",
            f"parallelism      {e['effective_parallelism']}"
            # the GPU pool bound is named (the other bounds read off the fields above)
            + (f" ({e['parallelism_detail']})" if e.get("parallelism_bound") == "GPUs" else ""),
        ]
        base = campaign.base
        throttle = (f"{base.backend.max_concurrent} slot(s)" if campaign.is_campaign
                    else "none (single run)")
        lines.append(f"throttle         {throttle}")
        if base.inference.engine != "hf":  # the default sampler goes unsaid; another is named
            lines.append(f"engine           {base.inference.engine} (a server per run)")
        step = e.get("median_step_time_s")
        lines += [
            f"step time        {'-' if step is None else f'{step:.2f} s'}",
            f"wall time        {_hours(e.get('wall_hours'))}",
            f"sequential       {_hours(e.get('sequential_hours'))}",
            f"source: {e['step_time_source']}",
            # the core's hint names CLI flags; here the inputs above do the same
            "no step time yet: pick a GPU or CPU, or type s/step above"
            if e["step_time_source"] == "unknown" else e.get("detail", ""),
        ]
    return "\n".join(lines)


class PlanPanel(Widget):
    DEFAULT_CSS = """
    #plan-inputs { height: 1; }
    #plan-gpu { width: 1fr; }
    #plan-step-time { width: 10; margin-left: 1; }
    #plan-scroll { height: 1fr; margin-top: 1; }
    """
    class InputsChanged(Message):
        def __init__(self, gpu: str | None, step_time_s: float | None):
            super().__init__()
            self.gpu, self.step_time_s = gpu, step_time_s

    def compose(self) -> ComposeResult:
        yield Label("Plan", classes="section-label")
        with Horizontal(id="plan-inputs"):
            yield Select(GPU_CHOICES, prompt="GPU: auto", id="plan-gpu", compact=True)
            yield Input(placeholder="s/step", id="plan-step-time", compact=True)
        with VerticalScroll(id="plan-scroll"):
            yield Static("", id="plan-body", markup=False)

    @property
    def gpu(self) -> str | None:
        value = self.query_one("#plan-gpu", Select).value
        return value if isinstance(value, str) else None

    @property
    def step_time_s(self) -> float | None:
        text = self.query_one("#plan-step-time", Input).value.strip()
        try:
            value = float(text)
        except ValueError:
            return None
        return value if value > 0 else None

    def show_plan(self, campaign, estimate: dict | None, error: str = "",
                  defaults: list[str] = ()) -> None:
        text = plan_text(campaign, estimate, defaults)
        if error:
            text += f"\n{error}"
        self.query_one("#plan-body", Static).update(text)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(self.InputsChanged(self.gpu, self.step_time_s))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        bad = bool(event.value.strip()) and self.step_time_s is None
        event.input.set_class(bad, "-invalid")
        self.post_message(self.InputsChanged(self.gpu, self.step_time_s))
