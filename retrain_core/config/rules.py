"""What each config key accepts: its TOML type (from the schema) and its range or choices.

`check_field(section, name, value)` returns the normalised value and the problems as
`(key suffix, message)` pairs; the suffix is "" or an element index like "[3]", so the
caller can build the dotted key and find its line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from retrain_core.expr import check_rules
from retrain_core.notify import webhook_problem
from retrain_core.registry import REGISTRY, is_dotted_path

from .errors import describe, did_you_mean
from .schema import AUTO_WORD, SECTION_TYPES, CampaignSection

SECTIONS: dict[str, type] = {"campaign": CampaignSection, **SECTION_TYPES}
FIELD_TYPES: dict[str, dict[str, str]] = {
    name: {f.name: str(f.type) for f in fields(cls)} for name, cls in SECTIONS.items()
}
SEPA_SCHEDULES = ("linear", "auto")
DTYPES = ("auto", "float32", "float16", "bfloat16", "fp32", "fp16", "bf16")
SEED_MAX = 2**32 - 1
# Sanity bounds: far above any real run, low enough that a typo (an extra few zeros)
# is refused before anything is created rather than planned as centuries of work.
MAX_STEPS = 1_000_000
MAX_RUNS = 1_000  # conditions × seeds of one campaign
MAX_SEEDS = 1_000
MAX_BATCH = 65_536  # prompts per step, completions per prompt
MAX_TOKENS = 1_048_576

Problems = list[tuple[str, str]]

# Keys whose None means "the program decides" (schema.unset_as): dotted key -> (the 0 or ""
# that a file may write for it, whether "auto" is accepted too).
UNSET_SPELLINGS: dict[str, tuple[Any, bool]] = {
    f"{section}.{f.name}": (f.metadata["toml_spelling"], f.metadata["auto_word"])
    for section, cls in SECTIONS.items() for f in fields(cls) if "toml_spelling" in f.metadata
}


def toml_spelling(dotted: str, value: Any) -> Any:
    """`value` as a file writes it: an unset key's None as its 0 or ""."""
    return UNSET_SPELLINGS[dotted][0] if value is None and dotted in UNSET_SPELLINGS else value


def is_plugin_path(value: str) -> bool:
    """`package.module.name` or `package.module:name`: a user-supplied implementation."""
    return is_dotted_path(value)


# -- types -----------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


TYPE_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", _is_int),
    "float": ("a number", lambda v: _is_int(v) or isinstance(v, float)),
    "bool": ("a boolean (true or false)", lambda v: isinstance(v, bool)),
    "dict": ("a table", lambda v: isinstance(v, dict)),
    "list[int]": ("an array of integers", lambda v: isinstance(v, list) and all(map(_is_int, v))),
    "list[str]": ("an array of strings",
                  lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "list[dict]": ("an array of tables",
                   lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v)),
}


# -- ranges ----------------------------------------------------------------------------
def _at_least(low: float, what: str) -> tuple[str, Callable[[Any], bool]]:
    return what, lambda v: v >= low


POSITIVE_INT = _at_least(1, "a positive integer (>= 1)")
NON_NEGATIVE = _at_least(0, "a number >= 0")
NON_NEGATIVE_INT = _at_least(0, "an integer >= 0")
POSITIVE = ("a number > 0", lambda v: v > 0)
NON_EMPTY = ("a non-empty string", lambda v: v.strip() != "")

RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "campaign.max_steps": POSITIVE_INT,
    "campaign.max_workers": NON_NEGATIVE_INT,
    "campaign.stagger_seconds": NON_NEGATIVE,
    "campaign.max_retries": NON_NEGATIVE_INT,
    "campaign.gpus_per_run": POSITIVE_INT,
    "campaign.grace_seconds": NON_NEGATIVE,
    "campaign.min_free_gb": NON_NEGATIVE,
    "campaign.seeds": ("at least one seed", lambda v: len(v) > 0),
    "campaign.conditions": ("at least one condition", lambda v: len(v) > 0),
    "backend.devices": ('"auto", "cpu", "mps", "cuda", "cuda:N" or a GPU list "cuda:0,1,…"',
                        lambda v: bool(re.fullmatch(r"auto|cpu|mps|cuda(:\d+(\s*,\s*\d+)*)?", v))),
    "backend.max_concurrent": POSITIVE_INT,
    "backend.request_timeout_s": POSITIVE,
    "backend.api_key_env": NON_EMPTY,
    "model.model": NON_EMPTY,
    "model.lora_rank": POSITIVE_INT,
    "model.lora_alpha": NON_NEGATIVE,
    "model.lora_dropout": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "model.lora_target_modules": ("a non-empty array of module names",
                                  lambda v: len(v) > 0 and all(x.strip() for x in v)),
    "training.seed": (f"-1 (random) or an integer in 0..{SEED_MAX}",
                      lambda v: v == -1 or 0 <= v <= SEED_MAX),
    "training.max_steps": POSITIVE_INT,
    "training.batch_size": POSITIVE_INT,
    # A group of one has no baseline: every group would be skipped and nothing learnt.
    "training.group_size": ("an integer >= 2 (a group of one is always skipped)", lambda v: v >= 2),
    "training.max_tokens": POSITIVE_INT,
    "training.temperature": POSITIVE,
    "training.top_p": ("a number in (0, 1]", lambda v: 0 < v <= 1),
    "training.lr": POSITIVE,
    "training.weight_decay": NON_NEGATIVE,
    "training.grad_clip_norm": NON_NEGATIVE,
    "training.clip_eps": NON_NEGATIVE,
    "training.save_every": NON_NEGATIVE_INT,
    "training.ppo_epochs": POSITIVE_INT,
    "training.warmup_steps": NON_NEGATIVE_INT,
    "algorithm.tis_cap": ("0 (off) or a number >= 1", lambda v: v == 0 or v >= 1),
    "inference.vllm_command": NON_EMPTY,
    "inference.gpu_memory_utilization": ("0 (automatic) or a share in (0, 1]", lambda v: 0 <= v <= 1),
    "inference.vllm_start_timeout_s": POSITIVE,
    "inference.sampling_memory_gb": NON_NEGATIVE,
    "training.micro_batch_tokens": NON_NEGATIVE_INT,
    "data.max_examples": NON_NEGATIVE_INT,
    "gtpo.beta": NON_NEGATIVE,
    # α > 1 would flip the sign of negative advantages on planning tokens.
    "hicra.alpha": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
    "sepa.steps": NON_NEGATIVE_INT,
    "sepa.delay_steps": NON_NEGATIVE_INT,
    "sepa.correct_rate_gate": ("a number <= 1 (<= 0 opens the gate at once)", lambda v: v <= 1),
    "sepa.auto_ema_decay": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "sepa.auto_var_threshold": POSITIVE,
    "sepa.auto_warmup_steps": POSITIVE_INT,
    "squeeze.min_variance_retention": ("a number in (0, 1]", lambda v: 0 < v <= 1),
    "squeeze.source_rank": NON_NEGATIVE_INT,
    "squeeze.compress_to": NON_NEGATIVE_INT,
    "squeeze.device": NON_EMPTY,
    "logging.log_dir": NON_EMPTY,
    "eval.every": NON_NEGATIVE_INT,
    "eval.examples": POSITIVE_INT,
}


# Sanity bounds (checked after the ranges above): the largest value that is still a plan.
UPPER_BOUNDS: dict[str, tuple[int, str]] = {
    "campaign.max_steps": (MAX_STEPS, "steps per run"),
    "campaign.max_workers": (MAX_RUNS, "parallel runs (a campaign has at most that many runs)"),
    "campaign.stagger_seconds": (86_400, "seconds between launches (one day)"),
    "campaign.max_retries": (100, "retries per run"),
    "campaign.seeds": (MAX_SEEDS, "seeds"),
    "campaign.conditions": (MAX_RUNS, "conditions"),
    "training.max_steps": (MAX_STEPS, "steps per run"),
    "training.batch_size": (MAX_BATCH, "prompts per step"),
    "training.group_size": (MAX_BATCH, "completions per prompt"),
    "training.max_tokens": (MAX_TOKENS, "tokens per completion"),
    "training.save_every": (MAX_STEPS, "steps"),
    "sepa.steps": (MAX_STEPS, "steps"),
    "sepa.delay_steps": (MAX_STEPS, "steps"),
    "model.lora_rank": (65_536, "(LoRA rank)"),
}


def upper_bound_problem(dotted: str, value: Any) -> str | None:
    if dotted not in UPPER_BOUNDS:
        return None
    limit, what = UPPER_BOUNDS[dotted]
    size = len(value) if isinstance(value, list) else value
    if size <= limit:
        return None
    found = f"{size:,} {'entries' if isinstance(value, list) else ''}".strip()
    return (f"at most {limit:,} {what} is accepted (a sanity bound against typos), found {found}")


def _choice(value: str, choices: tuple[str, ...], aliases: dict[str, str] | None = None,
            plugin: bool = False) -> tuple[str, str | None]:
    aliases = aliases or {}
    if value in choices:
        return value, None
    if value in aliases:
        return aliases[value], None
    if plugin and is_plugin_path(value):
        return value, None
    listed = ", ".join(f'"{c}"' for c in choices)
    tail = " or a dotted plugin path (package.module.name)" if plugin else ""
    hint = did_you_mean(value, [*choices, *aliases])
    return value, f"expected one of {listed}{tail}, found {describe(value)}{hint}"


def _registered(kind: str, extra: tuple[str, ...] = ()) -> Callable[[str], tuple[str, str | None]]:
    """A value of a pluggable kind: a built-in (alias -> its name), an entry point or a dotted path."""
    def check(value: str) -> tuple[str, str | None]:
        if value in extra:
            return value, None
        canonical = REGISTRY.canonical(kind, value)
        if canonical is not None:
            return canonical, None
        if (kind, value) in REGISTRY.entry_points() or is_dotted_path(value):
            return value, None
        names = [*extra, *REGISTRY.names(kind)]
        listed = ", ".join(f'"{n}"' for n in names)
        hint = did_you_mean(value, [*names, *REGISTRY.aliases(kind)])
        return value, (f"expected one of {listed} or a dotted plugin path (package.module.name), "
                       f"found {describe(value)}{hint}")
    return check


def _data_source(value: str) -> tuple[str, str | None]:
    name, sep, argument = value.partition(":")
    if sep and name == "jsonl":
        return value, None if argument.strip() else 'expected "jsonl:PATH", found no path after "jsonl:"'
    if sep and (REGISTRY.builtin("data_source", name) or ("data_source", name) in REGISTRY.entry_points()):
        return value, None
    if REGISTRY.builtin("data_source", value) is not None and value != "jsonl":
        return value, None
    if ("data_source", value) in REGISTRY.entry_points() or is_dotted_path(value):
        return value, None
    names = [n if n != "jsonl" else "jsonl:PATH" for n in REGISTRY.names("data_source")]
    hint = did_you_mean(value, names)
    listed = ", ".join(f'"{n}"' for n in names)
    return value, (f"expected one of {listed} or a dotted plugin path (package.module.name), "
                   f"found {describe(value)}{hint}")


def _model(value: str) -> tuple[str, str | None]:
    if not value.startswith("builtin:"):
        return value, None
    name = value.removeprefix("builtin:")
    if REGISTRY.canonical("builtin_model", name) is not None or ("builtin_model", name) in REGISTRY.entry_points():
        return value, None
    names = [f"builtin:{n}" for n in REGISTRY.names("builtin_model")]
    return value, (f"unknown built-in model: expected one of {', '.join(names)}, a local folder or "
                   f"a Hugging Face model id, found {describe(value)}{did_you_mean(value, names)}")


def _prompt_template(value: str) -> tuple[str, str | None]:
    try:
        value.format(question="")
    except (KeyError, IndexError, ValueError) as exc:
        return value, (f"expected a template whose only field is {{question}} (write literal "
                       f"braces as {{{{ }}}}), found an invalid field: {exc}")
    if "{question}" not in value:
        return value, "expected a template containing {question}, found none"
    return value, None


CHOICES: dict[str, Callable[[str], tuple[str, str | None]]] = {
    "backend.backend": lambda v: _choice(v, tuple(REGISTRY.names("backend"))),
    "inference.engine": _registered("inference_engine"),
    "model.model": _model,
    "model.dtype": lambda v: _choice(v, DTYPES),
    "algorithm.advantage_mode": _registered("advantage"),
    "algorithm.transform_mode": _registered("transform"),
    "algorithm.uncertainty_kind": _registered("uncertainty"),
    "algorithm.algorithm_mode": _registered("algorithm", extra=("",)),
    "reward.type": _registered("reward"),
    "sepa.schedule": lambda v: _choice(v, SEPA_SCHEDULES),
    "training.lr_schedule": lambda v: _choice(v, ("constant", "linear", "cosine")),
    "training.activation_checkpointing": lambda v: _choice(v, ("auto", "on", "off")),
    "campaign.on_stall": lambda v: _choice(v, ("flag", "restart")),
    "eval.sampling": lambda v: _choice(v, ("greedy", "sampled", "both")),
    "campaign.launcher": lambda v: _choice(v, tuple(REGISTRY.names("launcher", installed=False))),
    "notify.webhook": lambda v: (v, webhook_problem(v)),
    "data.source": _data_source,
    "data.prompt_template": _prompt_template,
}


def _check_seeds(seeds: list[int]) -> Problems:
    problems, seen = [], set()
    for i, seed in enumerate(seeds):
        if not (seed == -1 or 0 <= seed <= SEED_MAX):
            problems.append((f"[{i}]", f"expected -1 or an integer in 0..{SEED_MAX}, found {seed}"))
        elif seed in seen:
            problems.append((f"[{i}]", f"duplicate seed {seed}: each seed may appear once"))
        seen.add(seed)
    return problems


def _check_ranks(ranks: list[int]) -> Problems:
    problems, seen = [], set()
    for i, rank in enumerate(ranks):
        if rank < 1:
            problems.append((f"[{i}]", f"expected a positive rank, found {rank}"))
        elif rank in seen:
            problems.append((f"[{i}]", f"duplicate rank {rank}"))
        seen.add(rank)
    return problems


ELEMENTS: dict[str, Callable[[list], Problems]] = {
    "campaign.seeds": _check_seeds,
    "campaign.rules": check_rules,
    "squeeze.target_ranks": _check_ranks,
    "planning.grams": lambda grams: [(f"[{i}]", "expected a non-empty phrase, found an empty string")
                                     for i, g in enumerate(grams) if not g.strip()],
}


def check_field(section: str, name: str, value: Any) -> tuple[Any, Problems]:
    """Type, range and choice checks of one key; returns (normalised value, problems)."""
    dotted = f"{section}.{name}"
    kind = FIELD_TYPES[section][name].removesuffix(" | None")
    spelling, auto_word = UNSET_SPELLINGS.get(dotted, (None, False))
    if dotted in UNSET_SPELLINGS and (value is None or (auto_word and value == AUTO_WORD)):
        return None, []
    expected, type_ok = TYPE_CHECKS[kind]
    if not type_ok(value):
        also = f' or "{AUTO_WORD}"' if auto_word else ""
        return value, [("", f"expected {expected}{also}, found {describe(value)}")]
    if dotted in UNSET_SPELLINGS and value == spelling:  # the spelling older files use
        return None, []
    if kind == "float" and not math.isfinite(value):
        return value, [("", f"expected a finite number, found {describe(value)}")]
    if dotted in RANGES:
        what, ok = RANGES[dotted]
        if not ok(value):
            return value, [("", f"expected {what}, found {describe(value)}")]
    too_big = upper_bound_problem(dotted, value)
    if too_big:
        return value, [("", too_big)]
    if kind == "float":
        value = float(value)  # TOML `lr = 1` is a fine float
    if dotted in CHOICES:
        value, message = CHOICES[dotted](value)
        if message:
            return value, [("", message)]
    if dotted in ELEMENTS:
        return value, ELEMENTS[dotted](value)
    return value, []
