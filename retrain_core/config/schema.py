"""Typed configuration schema: every section, key and default.

One dataclass per TOML section. Field names equal TOML keys, so a section table maps
one-to-one onto its dataclass; loading and validation live in `load.py`. The docstring under
each field is its documentation: `tools/gen_config_reference.py` renders them into the
reference table of configs/README.md (a test fails when the two differ), so every field
needs one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from retrain_core.registry import REGISTRY

DEFAULT_SEEDS = [42, 101, 202, 303, 404, 505, 606, 707]

DEFAULT_CONDITIONS = [
    {"advantage_mode": "grpo", "transform_mode": "none"},
    {"advantage_mode": "maxrl", "transform_mode": "none"},
    {"advantage_mode": "maxrl", "transform_mode": "gtpo"},
    {"advantage_mode": "maxrl", "transform_mode": "gtpo_hicra"},
    {"advantage_mode": "maxrl", "transform_mode": "gtpo_sepa"},
]

DEFAULT_PLANNING_GRAMS = [
    "wait let me", "let me think", "on second thought", "let me check", "let me verify",
    "is this right", "double check", "try another approach", "go back and", "start over",
    "that's not right", "that doesn't work", "another way to", "or we could", "what if we",
    "notice that", "the key is", "the key insight",
]

DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

DEFAULT_PROMPT_TEMPLATE = (
    "{question}\n\nPut your final answer within \\boxed{{}}."
)

# The built-in names, for suggestions; what is accepted is decided by retrain_core.registry.
ADVANTAGE_MODES = tuple(REGISTRY.names("advantage", installed=False))
TRANSFORM_MODES = tuple(REGISTRY.names("transform", installed=False))
UNCERTAINTY_KINDS = tuple(REGISTRY.names("uncertainty", installed=False))
BACKENDS = tuple(REGISTRY.names("backend", installed=False))

AUTO_WORD = "auto"


def unset_as(toml_spelling, *, auto: bool = True):
    """A field whose None means "the program decides" (its docstring says how).

    TOML has no null, so a file says None by leaving the key out, by writing `toml_spelling`
    (the 0 or "" that meant the same before None did; `Config.to_dict` writes it back, so a
    run's config.toml keeps its format) or, with `auto`, by writing "auto". A path field takes
    no "auto": that is a folder name.
    """
    return field(default=None, metadata={"toml_spelling": toml_spelling, "auto_word": auto})


def toml_values(section) -> dict:
    """A section dataclass as a plain dict of TOML values: an unset field as its spelling."""
    values = asdict(section)
    for f in fields(section):
        if values[f.name] is None and "toml_spelling" in f.metadata:
            values[f.name] = f.metadata["toml_spelling"]
    return values


@dataclass
class CampaignSection:
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    """One run per condition per seed; seeds must be distinct."""
    max_steps: int | None = None
    """Steps per run; unset: `[training] max_steps` (a condition may override it)."""
    parallel: bool = False
    """Run several runs at once (up to `max_workers`); false: one after another."""
    max_workers: int | None = unset_as(0)
    """Runs at once when `parallel`; unset (or `"auto"`, or 0) = all runs at once (still bound
    by the GPU pool)."""
    stagger_seconds: float = 0.0
    """Seconds between two launches, so start-ups do not collide."""
    max_retries: int = 0
    """Relaunches of a failed run before it stays failed."""
    gpus_per_run: int = 1
    """Each run's share of the `[backend] devices` pool."""
    grace_seconds: float | None = unset_as(0.0)
    """SIGTERM-to-SIGKILL grace on kill or stop; unset (or `"auto"`, or 0) = max(30 s, 3 × the
    run's median step)."""
    min_free_gb: float = 1.0
    """Below this much free disk the supervisor pauses launching (and resumes when space is back)."""
    conditions: list[dict] = field(default_factory=lambda: [dict(c) for c in DEFAULT_CONDITIONS])
    """The conditions compared: tables with `advantage_mode`, `transform_mode` and any overrides."""
    on_stall: str = "flag"
    """A running run with no new metrics for max(5 min, 5 × median step): `"flag"` or `"restart"`."""
    rules: list[dict] = field(default_factory=list)
    """`[[campaign.rules]]`: `when = "…"`, `action = "kill" | "pause" | "notify"`
    (docs/DECIDING.md)."""
    launcher: str = "local"
    """`"local"`: subprocesses on this machine; `"ray"`: one Ray actor per run, anywhere in the
    cluster."""
    ray_address: str = ""
    """With `launcher = "ray"`: the cluster; "" = `$RAY_ADDRESS`, else `"auto"`."""


@dataclass
class BackendConfig:
    backend: str = "local"
    """`"local"` (PyTorch in the trainer) or `"tinker"` (a remote Tinker service), or a plugin."""
    devices: str = "auto"
    """The GPU pool: `"auto"` (NVML), `"cpu"`, `"mps"`, `"cuda:0,1,…"` (trusted as given)."""
    max_concurrent: int = 4
    """Runs that may sample or train at the same moment (a file-lock throttle shared by the
    campaign)."""
    throttle_dir: str | None = unset_as("", auto=False)
    """Set by the supervisor: the campaign's throttle folder; unset (or "") = no throttle."""
    base_url: str = ""
    """With `backend = "tinker"`: the service; "" = `$TINKER_BASE_URL`, else the SDK's default."""
    api_key_env: str = "TINKER_API_KEY"
    """With `backend = "tinker"`: the environment variable holding the API key (never the key:
    configs are copied into campaign folders)."""
    request_timeout_s: float = 600.0
    """With `backend = "tinker"`: the timeout of one service call, in seconds."""


@dataclass
class ModelConfig:
    model: str = "Qwen/Qwen3-4B-Instruct-2507"
    """A Hugging Face id, a local folder (relative to the TOML) or `builtin:NAME`
    (`builtin:tiny-arith`, `builtin:smollm2-135m`)."""
    revision: str = ""
    """The Hugging Face revision (branch, tag or commit); "" = the default branch."""
    lora_rank: int = 32
    """LoRA rank of the adapter trained."""
    lora_alpha: float | None = unset_as(0.0)
    """LoRA scaling alpha; unset (or `"auto"`, or 0) = 2 × `lora_rank`."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path."""
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    """Module names the adapter wraps."""
    dtype: str = "auto"
    """Weights' dtype: `"auto"`, `float32`, `float16`, `bfloat16` (or `fp32`, `fp16`, `bf16`)."""


@dataclass
class AlgorithmConfig:
    advantage_mode: str = "maxrl"
    """Episode advantages: `grpo`, `maxrl`, or a plugin."""
    transform_mode: str = "gtpo_sepa"
    """Token-level transform of the advantages: `none`, `gtpo`, `gtpo_hicra`, `gtpo_sepa`, or a
    plugin."""
    uncertainty_kind: str = "surprisal"
    """Per-token uncertainty: `surprisal`, `predictive_variance`, `shannon_entropy` (or an alias),
    or a plugin."""
    algorithm_mode: str = ""
    """A plugin that replaces the whole advantage pipeline; "" = none."""
    advantage_params: dict = field(default_factory=dict)
    """Keyword arguments passed to the advantage plugin."""
    transform_params: dict = field(default_factory=dict)
    """Keyword arguments passed to the transform plugin."""
    tis_cap: float = 2.0
    """Truncated importance sampling: each token's advantage is weighted by min(p_train /
    p_sampler, `tis_cap`), correcting a sampler whose numerics differ from training (vLLM); 0 =
    off, else ≥ 1."""


@dataclass
class InferenceConfig:
    engine: str = "hf"
    """`"hf"` (alias `"local"`): the trainer samples with transformers itself; `"vllm"`: a `vllm serve`
    per run."""
    vllm_command: str = ".venv-vllm/bin/vllm"
    """The `vllm` executable; relative: to the working folder, else the checkout (made by `make
    vllm`)."""
    gpu_memory_utilization: float | None = unset_as(0.0)
    """vLLM's share of a GPU, in (0, 1]; unset (or `"auto"`, or 0) = 0.35 of a GPU (on CPU a
    2 GiB KV cache)."""
    vllm_start_timeout_s: float = 600.0
    """Seconds the engine may take to start (docs/BENCHMARKS.md has measured start-ups)."""
    sampling_memory_gb: float | None = unset_as(0.0)
    """hf engine: KV-cache budget of one sampling chunk; unset (or `"auto"`, or 0) = 0.9 of free
    GPU memory (CPU: no chunks)."""


@dataclass
class TrainingConfig:
    seed: int = -1
    """The run's seed; -1 = random (the seed drawn is recorded). A campaign sets it from
    `[campaign] seeds`."""
    max_steps: int = 500
    """Optimizer steps of a run (sampled batches × `ppo_epochs`)."""
    batch_size: int = 8
    """Prompts per step."""
    group_size: int = 16
    """Completions sampled per prompt (≥ 2: the group is the baseline)."""
    max_tokens: int = 10240
    """Longest completion, in tokens."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus sampling: in (0, 1]."""
    lr: float = 4e-5
    """Learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip_norm: float = 0.0
    """Clip the gradient norm to this; 0 = no clipping."""
    clip_eps: float = 0.0
    """PPO ratio clipping epsilon; 0 = off (acts only with `ppo_epochs` > 1)."""
    ppo_epochs: int = 1
    """Optimizer steps per sampled batch; > 1 lets `clip_eps` act."""
    lr_schedule: str = "constant"
    """`"constant"`, `"linear"` (to 0 at `max_steps`) or `"cosine"`."""
    warmup_steps: int = 0
    """Linear warm-up from lr / `warmup_steps` to lr, then the schedule."""
    save_every: int = 20
    """Save a checkpoint every N steps (and at the end)."""
    micro_batch_tokens: int | None = unset_as(0)
    """Padded tokens per training micro-batch; unset (or `"auto"`, or 0) = from free GPU memory
    (CPU: all at once)."""
    activation_checkpointing: str = "auto"
    """`"auto"` (on a GPU), `"on"` or `"off"`."""


@dataclass
class DataConfig:
    source: str = "math"
    """`arithmetic`, `math`, `jsonl:PATH` (relative to the TOML), `reasoning_gym:TASK[?k=v&…]`, or
    a plugin."""
    max_examples: int | None = unset_as(0)
    """Use at most this many examples; unset (or `"auto"`, or 0) = all."""
    shuffle: bool = True
    """Shuffle the examples each epoch (seeded by the run's seed)."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """The prompt; `{question}` is replaced by the example's question."""


@dataclass
class RewardConfig:
    type: str = "boxed"
    """`boxed` (the last `\\boxed{}` against the answer), `reasoning_gym` (the task's own scorer),
    or a plugin."""


@dataclass
class GtpoConfig:
    beta: float = 0.1
    """GTPO: each token's advantage is scaled by max(0, 1 + β(u/ū − 1)), u its uncertainty; 0 = the
    episode advantage."""


@dataclass
class HicraConfig:
    alpha: float = 0.2
    """HICRA: planning tokens' advantages become A + α|A|, α in [0, 1]."""


@dataclass
class SepaConfig:
    steps: int = 500
    """Steps over which SEPA's λ (the weight pooling execution tokens' uncertainty) ramps from 0 to
    1."""
    schedule: str = "linear"
    """`"linear"` or `"auto"` (λ also rises as execution-token variance falls)."""
    delay_steps: int = 50
    """Steps before λ starts to rise."""
    correct_rate_gate: float = 0.1
    """λ stays 0 until a step's correct rate reaches this (the gate then stays open); ≤ 0 opens it
    at once."""
    auto_ema_decay: float = 0.9
    """`auto`: decay of the moving average of the execution-token variance, in [0, 1)."""
    auto_var_threshold: float = 0.2
    """`auto`: λ = 1 once the variance average falls to this fraction of its value after the
    warm-up."""
    auto_warmup_steps: int = 10
    """`auto`: steps observed before the reference variance is fixed."""


@dataclass
class PlanningConfig:
    grams: list[str] = field(default_factory=lambda: list(DEFAULT_PLANNING_GRAMS))
    """Phrases that mark planning tokens (`[logging] strategic_grams` is an alias)."""


@dataclass
class SqueezeConfig:
    min_variance_retention: float = 0.95
    """Recommend the smallest rank keeping this share of the adapter's variance, in (0, 1]."""
    source_rank: int | None = unset_as(0)
    """The adapter's rank, checked against it; unset (or `"auto"`, or 0) = read from the
    adapter."""
    target_ranks: list[int] = field(default_factory=list)
    """Ranks to evaluate; empty = powers of two below the source rank, plus it."""
    adapter_path: str = ""
    """`retrain squeeze` on this config: the adapter folder (relative: to the working folder, else
    the TOML's)."""
    output_path: str = ""
    """Where a compressed adapter is written."""
    compress_to: int | None = unset_as(0)
    """The rank of the adapter written to `output_path` (when set); unset (or `"auto"`, or 0) =
    the recommended rank."""
    device: str = "cpu"
    """Device of the SVDs: `"cpu"` or a torch device."""


@dataclass
class LoggingConfig:
    log_dir: str = "logs/train"
    """Where a single run writes its folder (a campaign's runs live in the campaign folder)."""
    wandb_project: str = ""
    """Weights & Biases project; "" = no W&B logging."""
    wandb_entity: str = ""
    """Weights & Biases entity (team or user)."""
    wandb_group: str = ""
    """Weights & Biases group."""
    wandb_tags: str = ""
    """Comma-separated extra W&B tags (the label and seed are always tags)."""
    wandb_run_name: str = ""
    """Weights & Biases run name; "" = the run's name."""
    log_generations: bool = True
    """Write sampled completions to the run's folder."""


@dataclass
class EvalConfig:
    every: int = 0
    """Evaluate on the held-out set every N steps (and after the last); 0 = off."""
    examples: int = 64
    """Held-out problems (the source's own split, else set aside from it)."""
    sampling: str = "greedy"
    """`"greedy"`, `"sampled"` (training temperature) or `"both"`."""
    keep_best: bool = True
    """Keep the best checkpoint (greedy correct rate first) as `best/`."""


@dataclass
class NotifyConfig:
    webhook: str = ""
    """POST a JSON event per run failure, stall or finish and at campaign end; "" = none."""


@dataclass
class Config:
    """The resolved config of one run (a campaign's base config has the same shape)."""

    backend: BackendConfig = field(default_factory=BackendConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    gtpo: GtpoConfig = field(default_factory=GtpoConfig)
    hicra: HicraConfig = field(default_factory=HicraConfig)
    sepa: SepaConfig = field(default_factory=SepaConfig)
    planning: PlanningConfig = field(default_factory=PlanningConfig)
    squeeze: SqueezeConfig = field(default_factory=SqueezeConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Nested plain dict, one key per section: what `config.toml` of a run holds (an unset
        field as its TOML spelling, see `unset_as`)."""
        return {f.name: toml_values(getattr(self, f.name)) for f in fields(self)}


SECTION_TYPES: dict[str, type] = {f.name: f.type for f in fields(Config)}
# `f.type` is a string under `from __future__ import annotations`; resolve it once.
SECTION_TYPES = {name: globals()[t] if isinstance(t, str) else t for name, t in SECTION_TYPES.items()}
