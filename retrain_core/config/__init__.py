"""Configuration: schema, TOML loading with located errors, campaign expansion.

See docs/ARCHITECTURE.md ("Config") for the contract other packages code against.
"""

from __future__ import annotations

from .campaign import (
    Campaign,
    Condition,
    RunSpec,
    launch_problems,
    load_campaign,
    load_campaign_text,
    load_config,
    make_label,
)
from .errors import ConfigError, Problem
from .load import config_from_dict, config_to_toml
from .schema import CampaignSection, Config

__all__ = [
    "Campaign",
    "CampaignSection",
    "Condition",
    "Config",
    "ConfigError",
    "Problem",
    "RunSpec",
    "config_from_dict",
    "config_to_toml",
    "launch_problems",
    "load_campaign",
    "load_campaign_text",
    "load_config",
    "make_label",
]
