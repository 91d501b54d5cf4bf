"""`retrain compare DIR [--baseline LABEL] [--metric M] [--window last:N|step:N]
[--source auto|train|eval] [--json | --markdown | --csv]`."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

from retrain_core.compare import (
    SOURCES,
    CompareError,
    Comparison,
    compare_campaign,
    format_effect,
    is_rate,
)


def add_arguments(parser) -> None:
    parser.add_argument("campaign_dir", help="a campaign directory (logs/campaign_…)")
    parser.add_argument("--baseline", help="condition label to compare against (default: the first)")
    parser.add_argument("--metric", default="correct_rate", help="metrics field (default: correct_rate)")
    parser.add_argument("--window", default="last:20",
                        help="last:N = mean of each run's last N rows (default last:20); "
                             "step:N = the row at step N")
    parser.add_argument("--source", default="auto", choices=SOURCES,
                        help="training rows (metrics.jsonl) or held-out rows (eval.jsonl); "
                             "auto: eval when present")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per condition")


def _value(x: float | None, metric: str) -> str:
    """A level (not a difference): a rate in percent, anything else in its own units."""
    if x is None or math.isnan(x):
        return "-"
    return f"{x * 100:.1f}%" if is_rate(metric) else f"{x:.3g}"


def table_rows(comp: Comparison) -> list[list[str]]:
    """Header + one row per condition: the shared content of text, Markdown, CSV and the TUI."""
    m = comp.metric
    rows = [["condition", "n", f"{m} (95% CI)", f"Δ vs {comp.baseline} (t 95%)",
             "bootstrap 95%", "detectable", "verdict"]]
    for c in comp.conditions:
        a = c.across_seeds
        level = _value(a.mean, m) + (f" [{_value(a.low, m)}, {_value(a.high, m)}]" if a.n >= 2 else "")
        if c.diff is None:
            delta = boot = mde = "-"
            verdict = "baseline"
        else:
            d, b = c.diff, c.bootstrap
            delta = format_effect(d.mean, m) + (
                f" [{format_effect(d.low, m)}, {format_effect(d.high, m)}]" if d.n >= 2 else "")
            boot = f"[{format_effect(b.low, m)}, {format_effect(b.high, m)}]" if b.n >= 2 else "-"
            mde = format_effect(c.mde, m, signed=False)
            verdict = ("too few seeds" if d.n < 2 else
                       ("higher" if d.mean > 0 else "lower") if d.excludes_zero() else "no detectable difference")
        rows.append([c.label, str(a.n), level, delta, boot, mde, verdict])
    return rows


def render_text(comp: Comparison) -> str:
    rows = table_rows(comp)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [(f"{comp.campaign}: {comp.metric}, window {comp.window}, {comp.source} rows, "
              f"baseline {comp.baseline}")]
    for r in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    lines.append("")
    lines += [c.verdict for c in comp.conditions if c.diff is not None]
    lines.append("Paired by seed; intervals are 95%; 'detectable' = smallest difference a paired "
                  "t test (alpha 0.05, power 0.8) would find at this seed count.")
    return "\n".join(lines)


def render_markdown(comp: Comparison) -> str:
    rows = table_rows(comp)
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def render_csv(comp: Comparison) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["condition", "n", "mean", "ci_low", "ci_high", "diff_mean", "diff_low", "diff_high",
                "boot_low", "boot_high", "min_detectable_effect", "verdict"])
    for c in comp.conditions:
        d = c.to_dict()
        pd, bd = d["paired_diff"] or {}, d["bootstrap_diff"] or {}
        w.writerow([c.label, c.across_seeds.n, d["across_seeds"]["mean"], d["across_seeds"]["low"],
                    d["across_seeds"]["high"], pd.get("mean"), pd.get("low"), pd.get("high"),
                    bd.get("low"), bd.get("high"), d["min_detectable_effect"], c.verdict])
    return buf.getvalue().rstrip("\n")


def main(args) -> int:
    try:
        comp = compare_campaign(Path(args.campaign_dir), args.baseline, args.metric, args.window,
                                args.source)
    except CompareError as exc:
        print(f"retrain compare: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(comp.to_dict(), indent=1))
    elif args.markdown:
        print(render_markdown(comp))
    elif args.csv:
        print(render_csv(comp))
    else:
        print(render_text(comp))
    return 0
