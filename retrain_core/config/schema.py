"""Typed configuration schema: every section and default (documented in configs/README.md).

One dataclass per TOML section. Field names equal TOML keys, so a section table maps
one-to-one onto its dataclass; loading and validation live in `load.py`.
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


@dataclass
class CampaignSection:
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    max_steps: int | None = None  # None: fall back to [training].max_steps
    parallel: bool = False
    max_workers: int = 0  # 0 = all runs at once
    stagger_seconds: float = 0.0
    max_retries: int = 0
    gpus_per_run: int = 1  # each run's share of the [backend] devices pool
    grace_seconds: float = 0.0  # SIGTERM-to-SIGKILL grace; 0 = max(30 s, 3 × the run's median step)
    min_free_gb: float = 1.0  # below this much free disk the supervisor pauses launching
    conditions: list[dict] = field(default_factory=lambda: [dict(c) for c in DEFAULT_CONDITIONS])
    on_stall: str = "flag"  # a running run without new metrics for max(5 min, 5 × median step): "flag" | "restart"
    rules: list[dict] = field(default_factory=list)  # [[campaign.rules]] when = "…", action = "kill" | "pause" | "notify"
    launcher: str = "local"  # "local": subprocesses here; "ray": one Ray actor per run, anywhere in the cluster
    ray_address: str = ""  # launcher = "ray": the cluster ("" = RAY_ADDRESS, else "auto")


@dataclass
class BackendConfig:
    backend: str = "local"
    devices: str = "auto"  # the GPU pool: "auto" (NVML), "cpu", "cuda:0,1,…" (trusted as given)
    max_concurrent: int = 4
    throttle_dir: str = ""  # "" = no throttle
    # backend = "tinker": the service (else TINKER_BASE_URL / the SDK's default), the env var
    # holding the API key (never the key itself: configs are copied into campaign folders),
    # and the per-call timeout.
    base_url: str = ""
    api_key_env: str = "TINKER_API_KEY"
    request_timeout_s: float = 600.0


@dataclass
class ModelConfig:
    model: str = "Qwen/Qwen3-4B-Instruct-2507"
    revision: str = ""
    lora_rank: int = 32
    lora_alpha: float = 0  # 0 = 2 × rank
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    dtype: str = "auto"


@dataclass
class AlgorithmConfig:
    advantage_mode: str = "maxrl"
    transform_mode: str = "gtpo_sepa"
    uncertainty_kind: str = "surprisal"
    algorithm_mode: str = ""
    advantage_params: dict = field(default_factory=dict)
    transform_params: dict = field(default_factory=dict)
    # Truncated importance sampling: each token's advantage is weighted by
    # min(p_train / p_sampler, tis_cap), which corrects for a sampler whose numerics differ
    # from the training pass (vLLM); 0 turns it off.
    tis_cap: float = 2.0


@dataclass
class InferenceConfig:
    engine: str = "hf"  # "hf": transformers generate in the trainer; "vllm": a vllm serve per run
    vllm_command: str = ".venv-vllm/bin/vllm"  # relative: to the working folder, else the checkout
    gpu_memory_utilization: float = 0.0  # 0 = 0.35 of a GPU; on CPU ~4 GiB of host memory
    vllm_start_timeout_s: float = 600.0  # engine start-up (≈70 s on a loaded 2-core CPU box)
    # hf engine: KV-cache budget of one sampling chunk; 0 = 0.9 of free GPU memory (CPU: no chunks)
    sampling_memory_gb: float = 0.0


@dataclass
class TrainingConfig:
    seed: int = -1
    max_steps: int = 500
    batch_size: int = 8
    group_size: int = 16
    max_tokens: int = 10240
    temperature: float = 0.7
    top_p: float = 0.95
    lr: float = 4e-5
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0
    clip_eps: float = 0.0
    ppo_epochs: int = 1  # optimizer steps per sampled batch; > 1 lets clip_eps act
    lr_schedule: str = "constant"  # "constant", "linear" (to 0 at max_steps) or "cosine"
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr, then the schedule
    save_every: int = 20
    micro_batch_tokens: int = 0  # padded tokens per training micro-batch; 0 = from free GPU memory (CPU: all)
    activation_checkpointing: str = "auto"  # "auto" (on a GPU), "on" or "off"


@dataclass
class DataConfig:
    source: str = "math"
    max_examples: int = 0
    shuffle: bool = True
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE


@dataclass
class RewardConfig:
    type: str = "boxed"


@dataclass
class GtpoConfig:
    beta: float = 0.1


@dataclass
class HicraConfig:
    alpha: float = 0.2


@dataclass
class SepaConfig:
    steps: int = 500
    schedule: str = "linear"
    delay_steps: int = 50
    correct_rate_gate: float = 0.1
    auto_ema_decay: float = 0.9
    auto_var_threshold: float = 0.2
    auto_warmup_steps: int = 10


@dataclass
class PlanningConfig:
    grams: list[str] = field(default_factory=lambda: list(DEFAULT_PLANNING_GRAMS))


@dataclass
class SqueezeConfig:
    min_variance_retention: float = 0.95
    source_rank: int = 0
    target_ranks: list[int] = field(default_factory=list)
    adapter_path: str = ""
    output_path: str = ""
    compress_to: int = 0
    device: str = "cpu"


@dataclass
class LoggingConfig:
    log_dir: str = "logs/train"
    wandb_project: str = ""
    wandb_entity: str = ""
    wandb_group: str = ""
    wandb_tags: str = ""
    wandb_run_name: str = ""
    log_generations: bool = True


@dataclass
class EvalConfig:
    every: int = 0  # evaluate on the held-out set every N steps (and after the last); 0 = off
    examples: int = 64  # held-out problems (the source's own split, else set aside from it)
    sampling: str = "greedy"  # "greedy" | "sampled" (training temperature) | "both"
    keep_best: bool = True  # keep the best checkpoint (greedy correct rate first) as best/


@dataclass
class NotifyConfig:
    webhook: str = ""  # POST a JSON event per run failure/stall/finish and campaign end ("" = none)


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
        """Nested plain dict, one key per section: what `config.toml` of a run holds."""
        return asdict(self)


SECTION_TYPES: dict[str, type] = {f.name: f.type for f in fields(Config)}
# `f.type` is a string under `from __future__ import annotations`; resolve it once.
SECTION_TYPES = {name: globals()[t] if isinstance(t, str) else t for name, t in SECTION_TYPES.items()}
