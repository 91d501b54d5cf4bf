"""Campaign expansion: conditions × seeds -> runs, each with its merged, validated config.

A condition is `advantage_mode` + `transform_mode` plus overrides of the base config,
written either as section tables (`sepa = { steps = 100 }`) or as flat field names
(`lr = 1e-5`, `gtpo_beta = 0.2`, `sepa_steps = 100`). Overrides are stored under dotted
keys (`sepa.steps`) and appear, sorted, in the condition's label.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from retrain_core.registry import REGISTRY

from .errors import ConfigError, Problem, describe, did_you_mean
from .load import Collector, build_config, check_document, parse_toml
from .locate import line_of, locate_keys
from .resolve import config_dir_of, environment_problems, file_problems
from .rules import FIELD_TYPES, MAX_RUNS, check_field, toml_spelling
from .schema import DEFAULT_CONDITIONS, SECTION_TYPES, CampaignSection, Config

SAFE_LABEL = re.compile(r"^[A-Za-z0-9._+~=,:@-]+$")
MAX_LABEL_LENGTH = 200
HEAD_KEYS = ("advantage_mode", "transform_mode")
NOT_PER_CONDITION = {"training.seed": "the seed is set per run by [campaign].seeds"}

# Flat override names: a field name found in exactly one section, or `section_field`.
_OWNERS: dict[str, list[str]] = {}
for _section in SECTION_TYPES:
    for _name in FIELD_TYPES[_section]:
        _OWNERS.setdefault(_name, []).append(_section)
FLAT_NAMES: dict[str, tuple[str, str]] = {
    f"{s}_{n}": (s, n) for s in SECTION_TYPES for n in FIELD_TYPES[s]
}
FLAT_NAMES.update({n: (owners[0], n) for n, owners in _OWNERS.items() if len(owners) == 1})


@dataclass
class Condition:
    label: str
    advantage_mode: str
    transform_mode: str
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    line: int = 0  # where the condition is written (0: default or single-run condition)


@dataclass
class RunSpec:
    name: str  # f"{label}_s{seed}"
    label: str
    seed: int
    condition: Condition
    config: Config  # merged; training.seed = seed, training.max_steps resolved


@dataclass
class Campaign:
    source: Path
    settings: CampaignSection
    base: Config
    conditions: list[Condition]
    runs: list[RunSpec]  # condition-major order
    is_campaign: bool = True


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ":".join(format_value(v) for v in value)
    return str(value)


def make_label(advantage_mode: str, transform_mode: str, overrides: dict[str, Any]) -> str:
    """`{adv}+{transform}`, plus `~k=v,...` over the sorted dotted override keys."""
    label = f"{advantage_mode}+{transform_mode}"
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):  # advantage_params / transform_params tables
            flat.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
        else:
            flat[key] = value
    if flat:
        label += "~" + ",".join(f"{k}={format_value(flat[k])}" for k in sorted(flat))
    return label


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
        else:
            out[key] = value
    return out


def label_problem(label: str) -> str | None:
    if len(label) > MAX_LABEL_LENGTH:
        return f"label is {len(label)} characters long; at most {MAX_LABEL_LENGTH} fit a directory name"
    if not SAFE_LABEL.match(label) or label in (".", ".."):
        bad = sorted({ch for ch in label if not SAFE_LABEL.match(ch)})
        shown = "".join(bad) or label
        return (f'label "{label}" is not a safe directory name (characters {shown!r} are not '
                "allowed; use letters, digits and . _ + ~ = , : @ -)")
    return None


def _override_targets(out: Collector, key: str, name: str, value: Any) -> list[tuple[str, str, Any, str]]:
    """(section, field, value, problem key) for one condition entry, or [] after a problem."""
    if name in SECTION_TYPES and isinstance(value, dict):
        targets = []
        for sub, sub_value in value.items():
            if sub not in FIELD_TYPES[name]:
                out.add(f"{key}.{sub}", f"unknown key in [{name}]{did_you_mean(sub, FIELD_TYPES[name])}")
            else:
                targets.append((name, sub, sub_value, f"{key}.{sub}"))
        return targets
    if name in FLAT_NAMES:
        section, field_name = FLAT_NAMES[name]
        return [(section, field_name, value, key)]
    if name == "campaign":
        out.add(key, "campaign settings cannot be overridden per condition")
    elif name in SECTION_TYPES:
        out.add(key, f"expected a table of [{name}] keys, found {describe(value)}")
    elif name in _OWNERS:
        choices = ", ".join(f"{s}_{name}" for s in _OWNERS[name])
        out.add(key, f"ambiguous override name; write one of {choices}")
    else:
        hint = did_you_mean(name, [*FLAT_NAMES, *SECTION_TYPES])
        out.add(key, f"unknown override: not a section table or a config field name{hint}")
    return []


def check_condition(out: Collector, index: int, raw: Any, base: dict[str, dict[str, Any]]
                    ) -> tuple[Condition, dict[str, dict[str, Any]]] | None:
    """Validate one condition against the base values; returns it and its merged values."""
    key = f"campaign.conditions[{index}]"
    line = out.locations.get(key, 0)
    if not isinstance(raw, dict):
        out.add(key, f"expected a table with advantage_mode and transform_mode, found {describe(raw)}")
        return None
    merged = copy.deepcopy(base)
    head: dict[str, str] = {}
    ok = True
    for name in HEAD_KEYS:
        if name not in raw:
            out.add(f"{key}.{name}", f"missing: every condition needs {' and '.join(HEAD_KEYS)}")
            ok = False
            continue
        value, problems = check_field("algorithm", name, raw[name])
        for _, message in problems:
            out.add(f"{key}.{name}", message)
        ok = ok and not problems
        head[name] = value
    overrides: dict[str, Any] = {}
    for name, value in raw.items():
        if name in HEAD_KEYS:
            continue
        for section, field_name, sub_value, problem_key in _override_targets(out, f"{key}.{name}", name, value):
            dotted = f"{section}.{field_name}"
            if dotted in NOT_PER_CONDITION or (section == "algorithm" and field_name in HEAD_KEYS):
                out.add(problem_key, NOT_PER_CONDITION.get(dotted, f"set {field_name} directly in the condition"))
                ok = False
                continue
            if dotted in overrides:
                out.add(problem_key, f"{dotted} is overridden twice in this condition")
                ok = False
                continue
            normalised, problems = check_field(section, field_name, sub_value)
            for suffix, message in problems:
                out.add(problem_key + suffix, message)
            ok = ok and not problems
            # As the file spells it (an unset key's 0 or ""): labels and manifests keep their form.
            overrides[dotted] = toml_spelling(dotted, normalised)
            merged.setdefault(section, {})[field_name] = copy.deepcopy(normalised)
        if name not in FLAT_NAMES and not (name in SECTION_TYPES and isinstance(value, dict)):
            ok = False
    if not ok:
        return None
    merged.setdefault("algorithm", {}).update(head)
    label = make_label(head["advantage_mode"], head["transform_mode"], overrides)
    problem = label_problem(label)
    if problem:
        out.add(key, problem)
        return None
    return Condition(label, head["advantage_mode"], head["transform_mode"], overrides, line), merged


def load_campaign_text(text: str, path: str | Path = "<memory>", *, resolve: bool = True) -> Campaign:
    """Parse, validate and expand a campaign (or single-run) document held in memory.

    With `resolve` (the default) the files it names are checked too (plugins imported,
    data sources read, local models found; relative to the folder of `path`): see
    `resolve.py`. `resolve=False` checks the document alone (a campaign folder's copy).
    """
    campaign = _expand(text, path)
    if resolve:
        problems = file_problems(campaign, locate_keys(text))
        if problems:
            raise ConfigError(problems)
    return campaign


def _expand(text: str, path: str | Path) -> Campaign:
    file = str(path)
    doc = parse_toml(text, file)
    out = Collector(file, locate_keys(text))
    sections, campaign_table = check_document(out, doc)
    base = build_config(sections)
    if campaign_table is None:  # single-run file: one condition × one seed
        out.raise_if_any()
        algo = base.algorithm
        condition = Condition(f"{algo.advantage_mode}+{algo.transform_mode}", algo.advantage_mode,
                              algo.transform_mode)
        settings = CampaignSection(seeds=[base.training.seed], max_steps=None,
                                   conditions=[{k: getattr(algo, k) for k in HEAD_KEYS}])
        run = RunSpec(f"{condition.label}_s{base.training.seed}", condition.label,
                      base.training.seed, condition, copy.deepcopy(base))
        return Campaign(Path(path), settings, base, [condition], [run], is_campaign=False)
    raw_conditions = campaign_table.get("conditions", [dict(c) for c in DEFAULT_CONDITIONS])
    if not isinstance(raw_conditions, list) or not raw_conditions:
        found = describe(raw_conditions) if raw_conditions != [] else "an empty array"
        out.add("campaign.conditions", f"expected a non-empty array of condition tables, found {found}")
        raw_conditions = []
    conditions: list[tuple[Condition, dict]] = []
    labels: dict[str, int] = {}
    for index, raw in enumerate(raw_conditions):
        checked = check_condition(out, index, raw, sections)
        if checked is None:
            continue
        label = checked[0].label
        if label in labels:
            out.add(f"campaign.conditions[{index}]",
                    f'duplicate condition label "{label}" (same as conditions[{labels[label]}])')
            continue
        labels[label] = index
        conditions.append(checked)
    seeds = campaign_table.get("seeds", CampaignSection().seeds)
    if conditions and isinstance(seeds, list) and len(conditions) * len(seeds) > MAX_RUNS:
        out.add("campaign.seeds", f"{len(conditions):,} conditions × {len(seeds):,} seeds = "
                f"{len(conditions) * len(seeds):,} runs: at most {MAX_RUNS:,} runs per campaign "
                "are accepted (a sanity bound against typos); split it into several campaigns")
    out.raise_if_any()
    settings = CampaignSection(**{**campaign_table, "conditions": copy.deepcopy(raw_conditions)})
    runs = []
    for condition, merged in conditions:
        config = build_config(merged)
        if "training.max_steps" not in condition.overrides and settings.max_steps is not None:
            config.training.max_steps = settings.max_steps
        for seed in settings.seeds:
            run_config = replace(config, training=replace(config.training, seed=seed))
            runs.append(RunSpec(f"{condition.label}_s{seed}", condition.label, seed, condition,
                                copy.deepcopy(run_config)))
    return Campaign(Path(path), settings, base, [c for c, _ in conditions], runs, is_campaign=True)


def launch_problems(campaign: Campaign) -> list[Problem]:
    """Why this valid campaign cannot be launched here (e.g. a backend that is not installed).

    Loading accepts every backend of the schema; launching checks this first so that no
    run starts when one of them could not.
    """
    problems = []
    try:
        located = locate_keys(campaign.source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        located = {}  # an in-memory document
    line = line_of(located, "backend.backend")
    seen_backends: set[str] = set()
    for run in campaign.runs:
        backend = run.config.backend.backend
        if backend in seen_backends:
            continue
        seen_backends.add(backend)
        reason = REGISTRY.unavailable_reason("backend", backend, run.config)
        if reason:
            problems.append(Problem(str(campaign.source), line, "backend.backend",
                                    f'backend "{backend}" cannot run here: {reason}; the config '
                                    "is valid but cannot be launched until that is fixed"))
    problems += [Problem(str(campaign.source), line_of(located, key), key, message)
                 for key, message in _environment(campaign)[0]]
    launcher = campaign.settings.launcher
    reason = REGISTRY.unavailable_reason("launcher", launcher, campaign.settings)
    if reason:
        problems.append(Problem(str(campaign.source), line_of(located, "campaign.launcher"),
                                "campaign.launcher", f'launcher "{launcher}" cannot run here: {reason}'))
    from retrain_core.gpus import pool_problem  # a leaf module, like this one

    # With Ray the GPUs are the cluster's (Ray places runs), not this machine's.
    gpu_problem = "" if launcher == "ray" else pool_problem(
        campaign.base.backend.devices, campaign.settings.gpus_per_run)
    if gpu_problem:
        key = "campaign.gpus_per_run" if "gpus_per_run" in gpu_problem else "backend.devices"
        try:
            line = line_of(locate_keys(campaign.source.read_text(encoding="utf-8")), key)
        except (OSError, UnicodeDecodeError):
            line = 0
        problems.append(Problem(str(campaign.source), line, key, gpu_problem))
    return problems


def _environment(campaign: Campaign) -> tuple[list[tuple[str, str]], list[str]]:
    """Machine-dependent problems and notes (model in the HF cache, hub datasets), deduplicated."""
    problems: dict[tuple[str, str], None] = {}
    notes: dict[str, None] = {}
    for run in campaign.runs:
        found, said = environment_problems(run.config, config_dir_of(campaign.source))
        problems.update(dict.fromkeys(found))
        notes.update(dict.fromkeys(said))
    return list(problems), list(notes)


def launch_notes(campaign: Campaign) -> list[str]:
    """What launching will do that the user may not expect (e.g. download a model)."""
    return _environment(campaign)[1]


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), 0, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), 0, "", f"cannot read the file: {exc}")]) from None


def load_campaign(path: str | Path, *, resolve: bool = True) -> Campaign:
    """Load a campaign or single-run TOML file (a campaign directory: its campaign.toml)."""
    if Path(path).is_dir() and (Path(path) / "campaign.toml").is_file():
        path = Path(path) / "campaign.toml"
    return load_campaign_text(read_text(path), path, resolve=resolve)


def load_config(path: str | Path) -> Config:
    """The config of a single-run file, or the base config of a campaign file."""
    return load_campaign(path).base
