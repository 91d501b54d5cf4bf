"""Where an analysis goes besides the terminal: analysis.json and a wandb run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from retrain_core.atomic import atomic_write_text

from .analysis import SqueezeAnalysis

TABLE_COLUMNS = ["rank", "mean_variance", "min_variance", "max_variance", "worst_module",
                 "recommended"]


def write_analysis_json(analysis: SqueezeAnalysis, path) -> Path:
    """Write `analysis.to_dict()` atomically (tmp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(analysis.to_dict(), indent=2) + "\n")
    return path


def wandb_project_for(flag: str | None, config_project: str = "") -> str:
    """The project to log to: the flag, then [logging].wandb_project, then WANDB_PROJECT."""
    return flag or config_project or os.environ.get("WANDB_PROJECT", "")


def log_to_wandb(analysis: SqueezeAnalysis, project: str, entity: str = "",
                 group: str = "") -> str:
    """A `squeeze-analysis` run with the variance table and summary keys; returns its dir."""
    import wandb

    run = wandb.init(
        project=project, entity=entity or None, group=group or None,
        name="squeeze-analysis", job_type="squeeze",
        tags=["squeeze", f"rank-{analysis.recommended_rank}"],
        config={"adapter": analysis.adapter, "source_rank": analysis.source_rank,
                "recommended_rank": analysis.recommended_rank,
                "min_variance_retention": analysis.threshold,
                "num_layers": analysis.num_layers},
    )
    try:
        rows = [[r.rank, r.mean, r.min, r.max, r.worst_module, r.recommended]
                for r in analysis.rows]
        run.log({"squeeze/variance_table": wandb.Table(columns=TABLE_COLUMNS, data=rows)})
        # One point per target rank, so the retained variance plots against rank.
        for r in analysis.rows:
            run.log({"squeeze/rank": r.rank, "squeeze/mean_variance": r.mean,
                     "squeeze/min_variance": r.min, "squeeze/max_variance": r.max})
        run.summary.update({
            "squeeze/recommended_rank": analysis.recommended_rank,
            "squeeze/source_rank": analysis.source_rank,
            "squeeze/min_variance_retention": analysis.threshold,
            "squeeze/num_layers": analysis.num_layers,
        })
        return str(run.dir)
    finally:
        run.finish()
