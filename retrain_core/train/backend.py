"""The sampling/training seam: `TrainBackend` protocol and the local torch + peft backend.

`LocalBackend` samples all B×G rows in one batch (left padding; `decode.sample_rows`, which
drops rows from the batch as they end), records the log-probability (and, when asked, the
entropy) of each sampled token under the temperature-scaled policy from the same forward
passes, and trains LoRA parameters with the token-mean policy-gradient surrogate
(`logprobs.policy_loss`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from retrain_core.train.decode import CACHE_KWARG, cache_of, prompt_cache, sample_rows
from retrain_core.train.finite import NonFiniteGuard
from retrain_core.train.logprobs import policy_loss, ratio_stats, token_logprobs
from retrain_core.train.memory import (
    DTYPE_BYTES,
    checkpointing_wanted,
    concat_rollouts,
    micro_batch_token_budget,
    micro_batches,
    sampling_budget_bytes,
    sampling_bytes_per_row,
    sampling_chunks,
)
from retrain_core.train.mismatch import MismatchStats


@dataclass
class Rollouts:
    prompt_ids: torch.Tensor       # [N, P] left-padded
    prompt_mask: torch.Tensor      # bool [N, P]
    completion_ids: torch.Tensor   # [N, T]
    mask: torch.Tensor             # bool [N, T]: completion tokens up to and including EOS
    logprobs: torch.Tensor         # [N, T] sampling-time log-probs (0 on padding)
    entropies: torch.Tensor | None # [N, T] when asked
    texts: list[str]               # decoded completions
    prompts: list[str]             # prompt text of each row
    group_ids: torch.Tensor        # [N]
    hit_max_tokens: torch.Tensor   # bool [N]: no EOS within max_tokens


def rollouts_from_tokens(tokenizer, prompts: list[str], group_size: int,
                         prompt_tokens: list[list[int]], completions: list[list[int]],
                         logprobs: list[list[float]], hit_max_tokens: list[bool],
                         device: torch.device | str = "cpu") -> Rollouts:
    """`Rollouts` from token lists returned by a remote sampler (vLLM, Tinker).

    Row i is completion i of prompt i // group_size. Prompts are left-padded (as `generate`
    does), completions right-padded; the mask covers each completion's tokens, its EOS
    included when the sampler returned one."""
    pad = tokenizer.pad_token_id
    n = len(completions)
    rows_prompt = [ids for ids in prompt_tokens for _ in range(group_size)]
    p_len = max(len(ids) for ids in prompt_tokens)
    c_len = max(1, max(len(c) for c in completions))
    prompt_ids = torch.full((n, p_len), pad, dtype=torch.long)
    prompt_mask = torch.zeros((n, p_len), dtype=torch.bool)
    completion = torch.full((n, c_len), pad, dtype=torch.long)
    mask = torch.zeros((n, c_len), dtype=torch.bool)
    logp = torch.zeros((n, c_len), dtype=torch.float32)
    for i, (ids, tokens, lps) in enumerate(zip(rows_prompt, completions, logprobs)):
        prompt_ids[i, p_len - len(ids):] = torch.tensor(ids)
        prompt_mask[i, p_len - len(ids):] = True
        k = len(tokens)
        if k:
            completion[i, :k] = torch.tensor(tokens)
            mask[i, :k] = True
            logp[i, :k] = torch.tensor([float(x) for x in lps[:k]])
    texts = tokenizer.batch_decode(torch.where(mask, completion, pad), skip_special_tokens=True)
    group_ids = torch.arange(len(prompts)).repeat_interleave(group_size)
    dev = torch.device(device)
    return Rollouts(prompt_ids.to(dev), prompt_mask.to(dev), completion.to(dev), mask.to(dev),
                    logp.to(dev), None, texts, [p for p in prompts for _ in range(group_size)],
                    group_ids.to(dev), torch.tensor(hit_max_tokens, dtype=torch.bool, device=dev))


class TrainBackend(Protocol):
    tokenizer: object

    def sample(self, prompts: list[str], group_size: int) -> Rollouts: ...
    def train_step(self, rollouts: Rollouts, token_advantages: torch.Tensor,
                   active_rows: torch.Tensor | None = None, lr: float | None = None) -> dict: ...
    def save(self, directory: str | Path) -> None: ...
    def load(self, directory: str | Path) -> None: ...


def pick_device(devices: str) -> torch.device:
    """The device this run trains on; `devices` may name a whole pool ("cuda:0,1,…").

    In a campaign the supervisor has narrowed CUDA_VISIBLE_DEVICES to the run's share
    (RETRAIN_GPUS says so), so the run takes the first GPU it sees; alone it takes the first
    of the list. The local backend uses one GPU; the rest of a share is for engines that
    use several."""
    import os

    from retrain_core.gpus import explicit_gpus

    if devices in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    listed = explicit_gpus(devices)
    if listed is not None:
        return torch.device("cuda:0" if os.environ.get("RETRAIN_GPUS") else f"cuda:{listed[0]}")
    return torch.device(devices)


class LocalBackend:
    def __init__(self, cfg, want_entropy: bool = False, micro_batch_rows: int = 0):
        import warnings

        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from retrain_core.models.tiny import resolve_model_path

        # Keep stderr.log for real problems: no weight-loading progress bars, no library
        # deprecation chatter between transformers and peft.
        hf_logging.disable_progress_bar()
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        self.cfg = cfg
        self.device = pick_device(cfg.backend.devices)
        self.autocast = self.device.type == "cuda"
        dtype = {"auto": torch.bfloat16 if self.device.type == "cuda" else torch.float32,
                 "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}.get(cfg.model.dtype)
        if dtype is None:
            raise ValueError(f"[model].dtype: unknown dtype {cfg.model.dtype!r}")
        path = resolve_model_path(cfg.model.model)
        revision = cfg.model.revision or None
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        base = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=dtype)
        base.to(self.device)
        rank = cfg.model.lora_rank
        lora = LoraConfig(r=rank, lora_alpha=cfg.model.lora_alpha or 2 * rank,
                          lora_dropout=cfg.model.lora_dropout,
                          target_modules=list(cfg.model.lora_target_modules), task_type="CAUSAL_LM")
        self.model = get_peft_model(base, lora)
        self.want_entropy = want_entropy
        # Training micro-batches: a fixed row count when given, else by [training]
        # micro_batch_tokens (see train/memory.py); checkpointing "auto" is on on a GPU.
        self.micro_batch_rows = micro_batch_rows
        self.checkpointing = checkpointing_wanted(cfg.training, self.device)
        if self.checkpointing:  # (named gradient_checkpointing_enable before transformers 5.2x)
            if hasattr(base, "activation_checkpointing_enable"):
                base.activation_checkpointing_enable({"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        t = cfg.training
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, betas=(0.9, 0.95), eps=1e-8,
                                           weight_decay=t.weight_decay)
        self.nonfinite = NonFiniteGuard()  # skips NaN/inf updates; fails the run after a few
        self.eos_ids = self._eos_ids()
        # On CPU the three small matmuls of an unmerged LoRA layer cost more than the base
        # matmul itself; sampling with LoRA folded in is ~2x faster. (Off on GPU: it would
        # hold a second copy of every targeted weight during sampling.)
        self.merge_for_sampling = self.device.type == "cpu"
        self.share_prompt_pass = True

    def _merge_plan(self) -> list[tuple[torch.nn.Module, torch.Tensor]] | None:
        """(base layer, LoRA delta) for every LoRA layer, or None when one cannot be folded.

        peft's own `get_delta_weight` gives each layer type's delta in its base weight's
        layout (a GPT-2 `Conv1D` stores its weight transposed: fan_in_fan_out). A layer
        without one, with DoRA, whose delta does not fit its base weight, or whose weight is
        tied to another module's (a LoRA on a tied lm_head would change the embeddings too)
        is not folded: then nothing is, and sampling runs the adapters unmerged."""
        from peft.tuners.lora import LoraLayer

        owners: dict[int, int] = {}
        for module in self.model.modules():
            for param in module.parameters(recurse=False):
                owners[id(param)] = owners.get(id(param), 0) + 1
        plan = []
        for module in self.model.modules():
            if not isinstance(module, LoraLayer) or "default" not in module.active_adapters:
                continue
            base = getattr(module, "base_layer", None)
            weight = getattr(base, "weight", None)
            if (weight is None or getattr(module, "use_dora", {}).get("default", False)
                    or not hasattr(module, "get_delta_weight") or owners.get(id(weight), 0) > 1):
                return None
            delta = module.get_delta_weight("default")
            if delta.shape != weight.shape:
                return None
            plan.append((base, delta.to(weight.dtype)))
        return plan

    @contextmanager
    def _lora_merged(self):
        """LoRA folded into the base weights for sampling; the original tensors are put back
        afterwards (swapped, not subtracted), so base weights never drift."""
        plan = self._merge_plan() if self.merge_for_sampling else None
        if plan is None:
            yield
            return
        swaps = []
        try:
            for base, delta in plan:
                original = base.weight.data
                base.weight.data = original + delta
                swaps.append((base, original))
            with self.model.disable_adapter():
                yield
        finally:
            for base, original in swaps:
                base.weight.data = original

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def _autocast(self):
        if self.autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def sample(self, prompts: list[str], group_size: int, temperature: float | None = None,
               max_tokens: int | None = None) -> Rollouts:
        """All B×G rows, in row chunks whose worst-case KV cache fits the sampling budget
        (one chunk when it all fits, or on a CPU without [inference] sampling_memory_gb)."""
        limit = max_tokens or self.cfg.training.max_tokens
        widest = max((len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts), default=0)
        dtype_bytes = DTYPE_BYTES.get(str(self.model.dtype).removeprefix("torch."), 4)
        row_bytes = sampling_bytes_per_row(self.model.config, dtype_bytes, widest, limit)
        chunks = sampling_chunks(len(prompts), group_size, row_bytes,
                                 sampling_budget_bytes(self.cfg.inference, self.device))
        if len(chunks) == 1:
            return self._sample_rows(prompts, group_size, temperature, max_tokens)
        parts = [self._sample_rows(prompts[first : first + count], rows, temperature, max_tokens)
                 for first, count, rows in chunks]
        return concat_rollouts(parts, self.tokenizer.pad_token_id, group_size)

    @torch.no_grad()
    def _sample_rows(self, prompts: list[str], group_size: int, temperature: float | None = None,
                     max_tokens: int | None = None) -> Rollouts:
        t = self.cfg.training
        temperature = t.temperature if temperature is None else temperature
        rows = [p for p in prompts for _ in range(group_size)]
        enc = self.tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_ids = enc["input_ids"].to(self.device)
        prompt_mask = enc["attention_mask"].to(self.device)
        self.model.eval()
        with self._autocast(), self._lora_merged():
            prefill = None
            if group_size > 1 and self.share_prompt_pass and prompt_ids.shape[1] > 1:
                prefill = self._shared_prefill(prompt_ids, prompt_mask, group_size)
            sampled = sample_rows(self.model, prompt_ids, prompt_mask, max_new_tokens=max_tokens or t.max_tokens,
                                  eos_ids=self.eos_ids, pad_id=self.tokenizer.pad_token_id,
                                  temperature=temperature, top_p=t.top_p, want_entropy=self.want_entropy,
                                  prefill=prefill)
        completion = sampled.completion_ids
        is_eos = torch.isin(completion, torch.tensor(self.eos_ids, device=completion.device))
        # Active through the first EOS (inclusive); everything after is padding, with log-prob
        # and entropy 0 (the loop never writes a row past its end).
        mask = (is_eos.long().cumsum(dim=1) - is_eos.long()) == 0
        texts = self.tokenizer.batch_decode(torch.where(mask, completion, self.tokenizer.pad_token_id),
                                            skip_special_tokens=True)
        group_ids = torch.arange(len(prompts), device=self.device).repeat_interleave(group_size)
        return Rollouts(prompt_ids, prompt_mask.bool(), completion, mask, sampled.logprobs,
                        sampled.entropies, texts, rows, group_ids, ~is_eos.any(dim=1))

    def _shared_prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, group_size: int):
        """KV cache of every prompt but its last token, computed once per group and repeated:
        the sampling loop then feeds only the last prompt token of each row."""
        first = torch.arange(0, prompt_ids.shape[0], group_size, device=prompt_ids.device)
        cache = prompt_cache(self.model, prompt_ids[first], prompt_mask[first])
        cache.batch_repeat_interleave(group_size)
        return cache

    def forward_logprobs(self, rollouts: Rollouts, rows: torch.Tensor, want_entropy: bool = False):
        """Log-probs of the sampled tokens of `rows` under the current policy (chunked head).

        Rows of one group share their prompt: when `rows` is made of whole groups of equal
        size, the prompt runs once per group (with gradients) and its KV cache is repeated
        for the group's completions, instead of G identical prompt passes."""
        causal_lm = self.model.get_base_model()
        inner = getattr(causal_lm, causal_lm.base_model_prefix)
        p_ids, c_ids = rollouts.prompt_ids[rows], rollouts.completion_ids[rows]
        p_mask, c_mask = rollouts.prompt_mask[rows].long(), rollouts.mask[rows].long()
        # Columns past these rows' longest completion are all padding: not run at all.
        full_width = c_ids.shape[1]
        width = max(int(c_mask.sum(dim=1).max()), 1) if full_width else 0
        c_ids, c_mask = c_ids[:, :width], c_mask[:, :width]
        attn = torch.cat([p_mask, c_mask], dim=1)
        position_ids = (attn.cumsum(dim=1) - 1).clamp(min=0)  # as generate does for left padding
        p = p_ids.shape[1]
        _, counts = torch.unique_consecutive(rollouts.group_ids[rows], return_counts=True)
        # (Under activation checkpointing a layer in training mode keeps no KV cache.)
        shared = (bool((counts == counts[0]).all()) and int(counts[0]) > 1 and self.share_prompt_pass
                  and not (self.checkpointing and self.model.training))
        with self._autocast():
            if shared:
                first = torch.cumsum(counts, 0) - counts
                prompt_out = inner(input_ids=p_ids[first], attention_mask=p_mask[first],
                                   position_ids=position_ids[first, :p], use_cache=True)
                cache = cache_of(prompt_out)
                repeats = int(counts[0])
                cache.batch_repeat_interleave(repeats)
                last_prompt = prompt_out.last_hidden_state[:, -1:].repeat_interleave(repeats, dim=0)
                comp = inner(input_ids=c_ids, attention_mask=attn, position_ids=position_ids[:, p:],
                             use_cache=True, **{CACHE_KWARG: cache}).last_hidden_state
                hidden = torch.cat([last_prompt, comp[:, :-1]], dim=1)
            else:
                ids = torch.cat([p_ids, c_ids], dim=1)
                hidden = inner(input_ids=ids, attention_mask=attn, position_ids=position_ids,
                               use_cache=False).last_hidden_state
                hidden = hidden[:, p - 1 : p - 1 + c_ids.shape[1]]
        lp, ent = token_logprobs(hidden, causal_lm.get_output_embeddings(), c_ids,
                                 temperature=self.cfg.training.temperature, want_entropy=want_entropy)
        pad = (0, full_width - width)
        return torch.nn.functional.pad(lp, pad), None if ent is None else torch.nn.functional.pad(ent, pad)

    def train_step(self, rollouts: Rollouts, token_advantages: torch.Tensor,
                   active_rows: torch.Tensor | None = None, lr: float | None = None) -> dict:
        """`ppo_epochs` AdamW steps on the surrogate over the same rollouts (see `policy_loss`).

        `active_rows` defaults to rows with any advantage; `lr` (the schedule's value for
        this step) overrides the optimizer's. The ratio of the first epoch is exactly 1; the
        ratio statistics cover the later epochs (1, 1, 0 with a single epoch)."""
        t = self.cfg.training
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        adv = token_advantages.to(self.device)
        if active_rows is None:
            active_rows = (adv != 0).any(dim=1)
        active = rollouts.mask & active_rows.to(self.device).unsqueeze(1)
        num_active = int(active.sum())
        self.model.train()
        row_ids = torch.nonzero(active_rows.to(self.device)).squeeze(1)
        chunks = self._micro_batches(rollouts, row_ids)
        old: list[torch.Tensor] = []  # first-epoch log-probs per chunk: what later ratios are against
        mismatch, tis = MismatchStats(), []  # per chunk: TIS weights vs the sampler's log-probs
        loss_total, grad_norm = 0.0, 0.0
        ratio_sum, ratio_max, outside, counted = 0.0, 1.0, 0, 0
        for epoch in range(max(int(getattr(t, "ppo_epochs", 1)), 1) if num_active else 0):
            self.optimizer.zero_grad(set_to_none=True)
            for index, rows in enumerate(chunks):
                lp, _ = self.forward_logprobs(rollouts, rows)
                if epoch == 0:
                    old.append(lp.detach())
                    tis.append(mismatch.weights(lp, rollouts.logprobs[rows], active[rows],
                                                self.cfg.algorithm.tis_cap))
                else:
                    r_sum, r_max, r_out, r_n = ratio_stats(lp, old[index], active[rows], t.clip_eps)
                    ratio_sum, outside, counted = ratio_sum + r_sum, outside + r_out, counted + r_n
                    ratio_max = max(ratio_max, r_max) if r_n else ratio_max
                loss = policy_loss(lp, old[index], adv[rows] * tis[index], active[rows], num_active,
                                   t.clip_eps)
                loss.backward()
                loss_total += float(loss.detach()) if epoch == 0 else 0.0  # the on-policy loss
            max_norm = t.grad_clip_norm if t.grad_clip_norm > 0 else float("inf")
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
            grad_norm = norm if epoch == 0 else grad_norm  # the on-policy gradient's norm
            if not self.nonfinite.allow_update(loss_total if epoch == 0 else 0.0, norm):
                break  # a NaN/inf update would poison the adapter for good: skip it
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss_total, "grad_norm": grad_norm, "num_active_tokens": num_active,
                "lr": self.optimizer.param_groups[0]["lr"],
                "ppo_ratio_mean": ratio_sum / counted if counted else 1.0, "ppo_ratio_max": ratio_max,
                "ppo_clip_fraction": outside / counted if counted else 0.0, **mismatch.metrics()}

    def _micro_batches(self, rollouts: Rollouts, row_ids: torch.Tensor) -> list[torch.Tensor]:
        """Training micro-batches: `micro_batch_rows` rows each when set, else by the token
        budget of [training] micro_batch_tokens (from free GPU memory when 0)."""
        if self.micro_batch_rows:
            step = self.micro_batch_rows
            return [row_ids[start : start + step] for start in range(0, len(row_ids), step)]
        dtype_bytes = DTYPE_BYTES.get(str(self.model.dtype).removeprefix("torch."), 4)
        budget = micro_batch_token_budget(self.cfg.training, self.model.config, dtype_bytes, self.device,
                                          self.checkpointing)
        rows = row_ids.tolist()
        lengths = rollouts.mask.sum(dim=1)[row_ids].tolist()
        groups = rollouts.group_ids[row_ids].tolist()
        return [torch.tensor(b, dtype=torch.long, device=row_ids.device)
                for b in micro_batches(rows, lengths, rollouts.prompt_ids.shape[1], groups, budget)]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")

    def load(self, directory: str | Path) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        directory = Path(directory)
        weights = load_file(str(directory / "adapter_model.safetensors"), device=str(self.device))
        set_peft_model_state_dict(self.model, weights)
        opt_path = directory / "optimizer.pt"
        if opt_path.exists():
            self.optimizer.load_state_dict(torch.load(opt_path, map_location=self.device, weights_only=False))


def make_backend(cfg, want_entropy: bool = False, run_dir: str | Path | None = None) -> TrainBackend:
    """The `[backend].backend` named in the config, through the one plugin registry.

    `run_dir` is where an inference engine keeps its files (the vLLM server's log)."""
    from retrain_core.registry import REGISTRY

    if cfg.backend.backend == "local" and REGISTRY.canonical("inference_engine", cfg.inference.engine) == "vllm":
        from retrain_core.train.vllm_sampling import VllmBackend

        return VllmBackend(cfg, want_entropy=want_entropy, run_dir=run_dir)
    if cfg.backend.backend == "local":
        return LocalBackend(cfg, want_entropy=want_entropy)
    reason = REGISTRY.unavailable_reason("backend", cfg.backend.backend, cfg)
    if reason or REGISTRY.builtin("backend", cfg.backend.backend) is None:
        raise BackendUnavailable(cfg.backend.backend, reason)
    return REGISTRY.resolve("backend", cfg.backend.backend)(cfg, want_entropy=want_entropy, run_dir=run_dir)


class BackendUnavailable(RuntimeError):
    def __init__(self, name: str, reason: str = ""):
        super().__init__(
            f"[backend].backend = {name!r} cannot run here: "
            f"{reason or 'it is not a backend of this installation'}. "
            "Set backend = \"local\" to train on this machine.")
