"""`TinkerBackend`: sampling and LoRA training through a Tinker service (`backend = "tinker"`).

The service holds the base model and the adapter; this side keeps everything else of a run:
the data stream, rewards, our advantage pipeline (the per-token advantages it sends), SEPA,
metrics and checkpoints (which record the service's saved-state path).

What differs from the local backend, plainly:
- The loss is the service's `importance_sampling` loss (`ppo`, which clips the ratio to
  [0.8, 1.2] server-side, when `[training] clip_eps > 0`): Σ_t ratio_t · A_t over target
  tokens. We divide each advantage by the step's number of active completion tokens, so the
  objective is the same token-mean surrogate the local backend minimises. No KL term.
- Datums are next-token aligned: `model_input = tokens[:-1]`, `target_tokens = tokens[1:]`,
  with zero log-prob and zero advantage over the prompt.
- The service reports no gradient norm (recorded as null) and no entropies (so
  `uncertainty_kind = "shannon_entropy"` is refused here).
- The loop holds a throttle slot around sampling and around the training call, so every
  API call of a step runs under `[backend] max_concurrent`; each call has a timeout
  (`[backend] request_timeout_s`). A call that fails after the SDK's own retries (it retries
  408/409/429/5xx) ends the run with an error naming the call and the service; no group is
  ever passed off as data.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import torch

from retrain_core.train.backend import Rollouts, rollouts_from_tokens

STATE_FILE = "tinker_state.json"


class TinkerCallError(RuntimeError):
    """A Tinker API call failed or timed out (after the SDK's own retries)."""


def tinker_endpoint(cfg) -> tuple[str, str]:
    """(base_url, api_key) from `[backend]`, else TINKER_BASE_URL / TINKER_API_KEY."""
    base_url = cfg.backend.base_url or os.environ.get("TINKER_BASE_URL", "")
    api_key = os.environ.get(cfg.backend.api_key_env or "TINKER_API_KEY", "")
    return base_url, api_key


def tinker_unavailable_reason(cfg) -> str | None:
    """Why a tinker run cannot start here (None when it can): the SDK must import and an API
    key must be set. A key is needed even for a local server (the SDK refuses to start
    without one); any value works there."""
    try:
        import tinker  # noqa: F401
    except ImportError:
        return ("the Tinker SDK is not installed: `pip install -e .[tinker]` "
                "(or `pip install tinker`)")
    _, api_key = tinker_endpoint(cfg)
    if not api_key:
        env = cfg.backend.api_key_env or "TINKER_API_KEY"
        return (f"no Tinker API key: set {env} in the environment (for a local server any "
                "value works, e.g. `tml-local`)")
    return None


class TinkerBackend:
    def __init__(self, cfg, want_entropy: bool = False, run_dir: str | Path | None = None):
        import tinker
        from transformers import AutoTokenizer

        from retrain_core.models.tiny import resolve_model_path

        if want_entropy:
            raise ValueError("[algorithm].uncertainty_kind = shannon_entropy needs per-token "
                             "entropies, which the Tinker service does not return")
        reason = tinker_unavailable_reason(cfg)
        if reason:
            raise RuntimeError(reason)
        self.cfg = cfg
        self.base_url, api_key = tinker_endpoint(cfg)
        self.timeout = float(cfg.backend.request_timeout_s)
        kwargs = {"api_key": api_key}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        self.service = self._call("ServiceClient", lambda: tinker.ServiceClient(**kwargs))
        # The base model's name as the service knows it; our tokenizer comes from the same
        # reference on this side (a built-in name resolves to its shipped folder).
        self.base_model = cfg.model.model
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.model))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.training = self._call("create_lora_training_client", lambda: self.service.create_lora_training_client(
            base_model=self.base_model, rank=cfg.model.lora_rank, seed=cfg.training.seed))
        self.sampler = None  # refreshed lazily after each update
        self.version = 0
        # Each step's API calls (what, start, end, seconds): the latency behind its sample and
        # train times, and what a throttle audit reads.
        self.call_log = Path(run_dir) / "api_calls.jsonl" if run_dir else None
        self.eos_ids = sorted({i for i in (self.tokenizer.eos_token_id,) if i is not None})

    def _record(self, what: str, start: float) -> None:
        if self.call_log is None:
            return
        end = time.time()
        with open(self.call_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"call": what, "start": start, "end": end,
                                 "seconds": round(end - start, 4), "pid": os.getpid()}) + "\n")

    # -- calls -------------------------------------------------------------------------
    def _call(self, what: str, submit):
        """Run one API call and wait for it, at most `request_timeout_s`; failures name the call.

        Some SDK calls block (client creation, saving weights for sampling) and retry a dead
        connection for many minutes on their own; so the call runs in a daemon thread and is
        abandoned at the timeout (the run then fails; the thread dies with the process)."""
        where = self.base_url or "the Tinker service"
        outcome: dict = {}

        def work():
            try:
                result = submit()
                outcome["value"] = (result.result(timeout=self.timeout)
                                    if hasattr(result, "result") else result)
            except Exception as exc:  # noqa: BLE001  (any SDK error: handed to the caller with its type)
                outcome["error"] = exc

        worker = threading.Thread(target=work, name=f"tinker-{what}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise TinkerCallError(f"Tinker call {what} to {where} got no answer within "
                                  f"{self.timeout:.0f} s ([backend] request_timeout_s)")
        if "error" in outcome:
            exc = outcome["error"]
            raise TinkerCallError(f"Tinker call {what} to {where} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        return outcome["value"]

    def _sampling_client(self):
        if self.sampler is None:
            name = f"v{self.version}"
            self.sampler = self._call("save_weights_and_get_sampling_client",
                                      lambda: self.training.save_weights_and_get_sampling_client(name=name))
        return self.sampler

    # -- TrainBackend ------------------------------------------------------------------
    def sample(self, prompts: list[str], group_size: int, temperature: float | None = None,
               max_tokens: int | None = None) -> Rollouts:
        from tinker import types

        t = self.cfg.training
        started = time.time()
        temperature = t.temperature if temperature is None else temperature
        sampler = self._sampling_client()
        params = types.SamplingParams(max_tokens=max_tokens or t.max_tokens,
                                      temperature=max(temperature, 1e-6), top_p=t.top_p,
                                      stop=self.eos_ids)
        prompt_tokens = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        # Submit every prompt's request first, then wait: the service batches them.
        futures = [self._call("sample (submit)", lambda ids=ids: sampler.sample(
            prompt=types.ModelInput.from_ints(ids), num_samples=group_size, sampling_params=params))
            for ids in prompt_tokens]
        seqs = []
        for future in futures:
            response = self._call("sample", lambda f=future: f)
            if len(response.sequences) != group_size:
                raise TinkerCallError(f"Tinker sample returned {len(response.sequences)} "
                                      f"sequences for num_samples={group_size}")
            seqs += response.sequences
        self._record("sample", started)
        return rollouts_from_tokens(
            self.tokenizer, prompts, group_size, prompt_tokens, [list(s.tokens) for s in seqs],
            [list(s.logprobs or [0.0] * len(s.tokens)) for s in seqs],
            [s.stop_reason == "length" for s in seqs])

    def train_step(self, rollouts: Rollouts, token_advantages: torch.Tensor,
                   active_rows: torch.Tensor | None = None, lr: float | None = None) -> dict:
        from tinker import types

        t = self.cfg.training
        lr = t.lr if lr is None else lr
        adv = token_advantages.float()
        if active_rows is None:
            active_rows = (adv != 0).any(dim=1)
        active = rollouts.mask & active_rows.unsqueeze(1)
        num_active = int(active.sum())
        if num_active == 0:
            return {"loss": 0.0, "grad_norm": None, "lr": lr}
        datums = []
        for i in torch.nonzero(active_rows).squeeze(1).tolist():
            prompt = rollouts.prompt_ids[i][rollouts.prompt_mask[i]].tolist()
            k = int(rollouts.mask[i].sum())
            comp = rollouts.completion_ids[i, :k].tolist()
            tokens = prompt + comp
            zeros = [0.0] * (len(prompt) - 1)
            datums.append(types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={
                    "target_tokens": types.TensorData.from_torch(torch.tensor(tokens[1:])),
                    "logprobs": types.TensorData.from_torch(
                        torch.tensor(zeros + rollouts.logprobs[i, :k].tolist())),
                    "advantages": types.TensorData.from_torch(
                        torch.tensor(zeros + (adv[i, :k] / num_active).tolist())),
                }))
        loss_fn = "ppo" if t.clip_eps > 0 else "importance_sampling"
        started = time.time()
        # Queue both calls before waiting: the service runs them back to back.
        fb = self._call("forward_backward (submit)",
                        lambda: self.training.forward_backward(datums, loss_fn))
        opt = self._call("optim_step (submit)", lambda: self.training.optim_step(
            types.AdamParams(learning_rate=lr, beta1=0.9, beta2=0.95, eps=1e-8)))
        out = self._call("forward_backward", lambda: fb)
        self._call("optim_step", lambda: opt)
        self._record("train", started)
        self.version += 1
        self.sampler = None
        return {"loss": _total_loss(out), "grad_norm": None, "lr": lr,
                "num_active_tokens": num_active}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"v{self.version}-{uuid.uuid4().hex[:8]}"  # unique per save, like the service's ids
        saved = self._call("save_state", lambda: self.training.save_state(name))
        record = {"state_path": saved.path, "base_model": self.base_model,
                  "lora_rank": self.cfg.model.lora_rank, "version": self.version,
                  "base_url": self.base_url}
        tmp = directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, directory / STATE_FILE)

    def load(self, directory: str | Path) -> None:
        record = json.loads((Path(directory) / STATE_FILE).read_text())
        restore = getattr(self.training, "load_state_with_optimizer", None) or self.training.load_state
        self._call("load_state_with_optimizer", lambda: restore(record["state_path"]))
        self.version = int(record.get("version", 0))
        self.sampler = None


def _total_loss(out) -> float:
    """The step's loss: the service's `loss:sum`-style metric when it reports one, else the
    sum of the per-token losses it returns (advantages were pre-divided by the token count,
    so either is the token mean)."""
    metrics = dict(getattr(out, "metrics", None) or {})
    for key, value in metrics.items():
        if key.split(":")[0] in ("loss", "total_loss"):
            return float(value)
    total = 0.0
    for item in getattr(out, "loss_fn_outputs", None) or []:
        loss = item.get("elementwise_loss") if isinstance(item, dict) else None
        if loss is not None:
            total += float(loss.to_torch().sum()) if hasattr(loss, "to_torch") else float(sum(loss))
    return total
