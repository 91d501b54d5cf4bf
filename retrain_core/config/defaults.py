"""The defaults that fill the gaps a campaign file leaves, said in words.

`retrain explain` and the TUI's plan panel both print these lines, so a user sees what a
launch will cost before the defaults decide it for them.
"""

from __future__ import annotations

from .campaign import Campaign


def filled_defaults(campaign: Campaign, raw: dict) -> list[str]:
    """One sentence per default that fills a gap the file leaves, for the choices that
    decide what a launch costs: a campaign without conditions is the 5-condition ablation
    × 8 seeds, an unset model is Qwen3-4B, unset steps are 500. `raw` is the parsed file."""
    notes = []
    table = raw.get("campaign") if isinstance(raw.get("campaign"), dict) else None
    if campaign.is_campaign and table is not None:
        if "conditions" not in table:
            notes.append(f"no conditions given: the default {len(campaign.conditions)}-condition "
                         "ablation (" + ", ".join(c.label for c in campaign.conditions) + ")")
        if "seeds" not in table:
            notes.append(f"no seeds given: the default {len(campaign.settings.seeds)} seeds")
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if "model" not in model:
        notes.append(f"no [model].model given: the default {campaign.base.model.model}")
    training = raw.get("training") if isinstance(raw.get("training"), dict) else {}
    if "max_steps" not in training and not (table and "max_steps" in table):
        notes.append(f"no max_steps given: the default {campaign.base.training.max_steps} "
                     "steps per run")
    return notes
