"""Memory budgets of the local backend: sampling row chunks, training micro-batches, OOM errors.

The campaign we size for (Qwen3-4B, B×G = 8×16, up to 10,240 new tokens, 80 GB) does not fit
in one piece: sampling 128 rows that all run to `max_tokens` holds every row's KV cache to
the end (≈ 144 KiB per token for Qwen3-4B; rows that end early leave the batch, see
`decode.py`, but the budget must hold for the worst case), and training without activation checkpointing
holds ≈ 5 MB of activations per token. So:

- sampling runs in chunks of rows whose KV cache (prompt + `max_tokens` per row, the worst
  case: every row runs to the limit) fits a byte budget: `[inference] sampling_memory_gb`,
  or on a GPU the memory free at sampling time (×0.9); on a CPU without the key, no chunks;
- training runs in micro-batches of rows whose padded token count (rows × (prompt width +
  longest completion among them)) fits `[training] micro_batch_tokens`; 0 means automatic:
  on a GPU from free memory and `training_bytes_per_token`, on a CPU one micro-batch;
- activation checkpointing (`[training] activation_checkpointing`, "auto" = on a GPU) keeps
  one layer input per token instead of every intermediate.

Both planners keep a group's rows together when a whole group fits (the shared prompt pass
and per-group sampling need that) and never return an empty chunk: one row always runs, and
if that row alone does not fit, the OOM error below says which knob to turn.
"""

from __future__ import annotations

import os
import resource

GIB = 2**30
SAMPLING_FREE_SHARE = 0.9  # of free GPU memory a sampling chunk may use by default
TRAINING_FREE_SHARE = 0.7  # of free GPU memory a micro-batch may use by default (grads, Adam)
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


# -- what a token costs --------------------------------------------------------------------
def _dims(model_config) -> tuple[int, int, int, int, int, int]:
    """(layers, hidden, kv heads, head dim, intermediate, vocab) of a transformers config."""
    c = model_config
    layers = int(getattr(c, "num_hidden_layers", 0) or getattr(c, "n_layer", 0))
    hidden = int(getattr(c, "hidden_size", 0) or getattr(c, "n_embd", 0))
    heads = int(getattr(c, "num_attention_heads", 0) or getattr(c, "n_head", 1))
    kv_heads = int(getattr(c, "num_key_value_heads", 0) or heads)
    head_dim = int(getattr(c, "head_dim", 0) or hidden // max(heads, 1))
    inter = int(getattr(c, "intermediate_size", 0) or getattr(c, "n_inner", 0) or 4 * hidden)
    return layers, hidden, kv_heads, head_dim, inter, int(getattr(c, "vocab_size", 0))


def kv_bytes_per_token(model_config, dtype_bytes: int) -> int:
    """Bytes of KV cache one token holds: keys and values of every layer."""
    layers, _, kv_heads, head_dim, _, _ = _dims(model_config)
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def sampling_bytes_per_row(model_config, dtype_bytes: int, prompt_tokens: int, max_tokens: int) -> int:
    """One row's worst case while sampling: its KV cache at full length, plus the fp32
    scores, log-softmax and probabilities of one step over the vocabulary."""
    vocab = _dims(model_config)[5]
    return (prompt_tokens + max_tokens) * kv_bytes_per_token(model_config, dtype_bytes) + 4 * 4 * vocab


def training_bytes_per_token(model_config, dtype_bytes: int, checkpointing: bool) -> int:
    """Activation bytes one trained token holds until backward (an estimate; bench/gpu_step.py
    fits the real figure). Checkpointed: each layer's input plus one layer's working set
    being recomputed; otherwise every layer's working set (attention and MLP inputs,
    norms, the MLP's gate/up/activation)."""
    layers, hidden, _, _, inter, _ = _dims(model_config)
    layer_working_set = (12 * hidden + 4 * inter) * dtype_bytes
    if checkpointing:
        return layers * hidden * dtype_bytes + layer_working_set
    return layers * layer_working_set


# -- budgets -------------------------------------------------------------------------------
def free_gpu_bytes(device) -> int | None:
    """Memory this process can still use on `device`: free on the card plus what PyTorch's
    caching allocator holds but does not use; None off a GPU."""
    import torch

    if getattr(device, "type", str(device)) != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def sampling_budget_bytes(inference_cfg, device) -> int | None:
    """`[inference] sampling_memory_gb`, else 0.9 of free GPU memory; None = no limit (CPU)."""
    set_gb = float(getattr(inference_cfg, "sampling_memory_gb", 0.0) or 0.0)
    if set_gb > 0:
        return int(set_gb * GIB)
    free = free_gpu_bytes(device)
    return None if free is None else int(free * SAMPLING_FREE_SHARE)


def micro_batch_token_budget(training_cfg, model_config, dtype_bytes: int, device,
                             checkpointing: bool) -> int | None:
    """`[training] micro_batch_tokens`, else from free GPU memory; None = one micro-batch."""
    set_tokens = int(getattr(training_cfg, "micro_batch_tokens", 0) or 0)
    if set_tokens > 0:
        return set_tokens
    free = free_gpu_bytes(device)
    if free is None:
        return None
    per_token = training_bytes_per_token(model_config, dtype_bytes, checkpointing)
    return max(int(free * TRAINING_FREE_SHARE) // max(per_token, 1), 1)


def checkpointing_wanted(training_cfg, device) -> bool:
    """`[training] activation_checkpointing`: "on", "off", or "auto" (on a GPU only)."""
    value = str(getattr(training_cfg, "activation_checkpointing", "auto")).lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    return getattr(device, "type", str(device)) == "cuda"


# -- planners ------------------------------------------------------------------------------
def sampling_chunks(num_prompts: int, group_size: int, row_bytes: int,
                    budget_bytes: int | None) -> list[tuple[int, int, int]]:
    """Split B prompts × G rows into chunks that fit `budget_bytes`.

    Returns (first prompt, number of prompts, rows per prompt) triples: whole groups when
    at least one group fits (as many as fit), else slices of one group. Together they cover
    every row once, in order."""
    if budget_bytes is None:
        return [(0, num_prompts, group_size)]
    rows_fit = max(budget_bytes // max(row_bytes, 1), 1)
    if rows_fit >= group_size:
        per_chunk = min(rows_fit // group_size, num_prompts)
        return [(start, min(per_chunk, num_prompts - start), group_size)
                for start in range(0, num_prompts, per_chunk)]
    out = []
    for prompt in range(num_prompts):
        for first in range(0, group_size, rows_fit):
            out.append((prompt, 1, min(rows_fit, group_size - first)))
    return out


def micro_batches(rows: list[int], lengths: list[int], prompt_tokens: int, group_of: list[int],
                  budget_tokens: int | None) -> list[list[int]]:
    """Split `rows` (in order) into micro-batches whose padded token count fits the budget.

    A micro-batch of n rows costs n × (prompt_tokens + its longest completion). Whole groups
    (consecutive rows with the same `group_of`) go together while they fit; a group that
    alone exceeds the budget is split row-wise. A row that alone exceeds it runs alone."""
    if budget_tokens is None or not rows:
        return [list(rows)] if rows else []
    units: list[list[int]] = []  # whole groups, or single rows of groups too large
    previous = object()
    for row, group in zip(rows, group_of):
        if units and group == previous:
            units[-1].append(row)
        else:
            units.append([row])
        previous = group
    length_of = dict(zip(rows, lengths))

    def cost(batch: list[int]) -> int:
        return len(batch) * (prompt_tokens + max(length_of[r] for r in batch))

    split: list[list[int]] = []
    for unit in units:
        split += [unit] if cost(unit) <= budget_tokens else [[r] for r in unit]
    batches: list[list[int]] = []
    for unit in split:
        if batches and cost(batches[-1] + unit) <= budget_tokens:
            batches[-1] += unit
        else:
            batches.append(list(unit))
    return batches


def concat_rollouts(parts: list, pad_id: int, group_size: int):
    """One `Rollouts` from the chunks of one batch, rows in order: prompts re-left-padded,
    completions right-padded (masked, log-prob 0) to the widest chunk."""
    import torch

    from retrain_core.train.backend import Rollouts

    width_p = max(r.prompt_ids.shape[1] for r in parts)
    width_c = max(r.completion_ids.shape[1] for r in parts)

    def left(t, width, value):
        return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

    def right(t, width, value):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    cat = torch.cat
    entropies = None
    if all(r.entropies is not None for r in parts):
        entropies = cat([right(r.entropies, width_c, 0.0) for r in parts])
    rows = sum(r.completion_ids.shape[0] for r in parts)
    device = parts[0].completion_ids.device
    return Rollouts(
        prompt_ids=cat([left(r.prompt_ids, width_p, pad_id) for r in parts]),
        prompt_mask=cat([left(r.prompt_mask, width_p, False) for r in parts]),
        completion_ids=cat([right(r.completion_ids, width_c, pad_id) for r in parts]),
        mask=cat([right(r.mask, width_c, False) for r in parts]),
        logprobs=cat([right(r.logprobs, width_c, 0.0) for r in parts]),
        entropies=entropies,
        texts=[text for r in parts for text in r.texts],
        prompts=[prompt for r in parts for prompt in r.prompts],
        group_ids=torch.arange(rows, device=device) // group_size,
        hit_max_tokens=cat([r.hit_max_tokens for r in parts]))


# -- out of memory -------------------------------------------------------------------------
class OutOfMemoryInPhase(RuntimeError):
    """Out of (GPU) memory, with the phase, the step and the knob to turn in the message:
    recorded as this type in error.json, so the breaker and the TUI show it as such."""

    def __init__(self, phase: str, step: int, knob: str, detail: str = ""):
        self.phase, self.step, self.knob = phase, step, knob
        super().__init__(f"out of memory while {phase} at step {step}: {knob}"
                         + (f" ({detail})" if detail else ""))


def is_oom(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom_type) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)
                                         and not isinstance(exc, OutOfMemoryInPhase))


def oom_error(phase: str, step: int, cfg, exc: BaseException) -> OutOfMemoryInPhase:
    """The error a run ends with when `phase` ("sampling" / "training") ran out of memory."""
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if phase == "sampling":
        gb = float(getattr(cfg.inference, "sampling_memory_gb", 0.0) or 0.0)
        now = f"now {gb:g}" if gb > 0 else f"now automatic: {SAMPLING_FREE_SHARE:g} of free GPU memory"
        knob = (f"lower [inference] sampling_memory_gb ({now}) so fewer rows sample at once, "
                "or lower [training] max_tokens")
    else:
        tokens = int(getattr(cfg.training, "micro_batch_tokens", 0) or 0)
        now = f"now {tokens}" if tokens > 0 else "now automatic"
        knob = (f"lower [training] micro_batch_tokens ({now}), or set [training] "
                f"activation_checkpointing = \"on\" (now {getattr(cfg.training, 'activation_checkpointing', 'auto')!r})")
    return OutOfMemoryInPhase(phase, step, knob, first_line)


# -- metrics -------------------------------------------------------------------------------
def memory_metrics() -> dict:
    """Peak GPU memory allocated / reserved since the last call (None without a GPU in
    use), and the host RSS now and at its peak, in MiB. Resets the GPU peaks, so each
    metrics line carries its own step's peak."""
    out: dict = {"gpu_peak_allocated_mb": None, "gpu_peak_reserved_mb": None}
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
            out["gpu_peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass
    out["host_rss_mb"] = host_rss_mb()
    out["host_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return out


def host_rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
