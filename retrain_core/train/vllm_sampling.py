"""`[inference] engine = "vllm"`: sample with the run's own vLLM server, train with HF.

`VllmBackend` is the local backend (same model, LoRA, optimizer, training pass) whose
`sample` goes to a `vllm serve` started for the run (`vllm_engine.VllmServer`). Before a
sample, if the weights changed since the last one, the adapter is saved under
`vllm_adapters/policy-N` in the run folder, loaded under that fresh name
(`/v1/load_lora_adapter`), and the previous one unloaded and deleted. Prompts go as token
ids (`n = G` completions each) and the `Rollouts` are built from the token ids and the
sampled tokens' log-probs that vLLM returns; the training pass recomputes log-probs with
HF, and the loss corrects the difference by truncated importance sampling
(`[algorithm] tis_cap`, see `mismatch.py`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import torch

from retrain_core.train.backend import LocalBackend, Rollouts, rollouts_from_tokens
from retrain_core.train.vllm_engine import VllmError, VllmServer

ADAPTERS_DIR = "vllm_adapters"
MODEL_LEN_HEADROOM = 4096  # prompt tokens allowed on top of max_tokens when the model allows more
VLLM_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class VllmBackend(LocalBackend):
    def __init__(self, cfg, want_entropy: bool = False, run_dir: str | Path | None = None,
                 micro_batch_rows: int = 0):
        from retrain_core.models.tiny import resolve_model_path

        super().__init__(cfg, want_entropy=want_entropy, micro_batch_rows=micro_batch_rows)
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="retrain-vllm-"))
        self.adapter_root = self.run_dir / ADAPTERS_DIR
        shutil.rmtree(self.adapter_root, ignore_errors=True)  # a previous attempt's adapters
        inf, t = cfg.inference, cfg.training
        model_max = getattr(self.model.get_base_model().config, "max_position_embeddings", None)
        wanted = t.max_tokens + MODEL_LEN_HEADROOM
        self.server = VllmServer(
            str(resolve_model_path(cfg.model.model)), self.run_dir, lora_rank=cfg.model.lora_rank,
            dtype=VLLM_DTYPES[next(self.model.parameters()).dtype], on_gpu=self.device.type == "cuda",
            command=inf.vllm_command, memory_share=inf.gpu_memory_utilization,
            max_model_len=min(model_max, wanted) if model_max else wanted,
            start_timeout_s=inf.vllm_start_timeout_s, seed=max(t.seed, 0)).start()
        atexit.register(self.close)  # the adapters' folder goes with the server
        self.weights_version = 0  # bumped whenever the LoRA weights change
        self.served: tuple[int, str] | None = None  # (weights_version, adapter name) on the server

    # -- weights to the server ----------------------------------------------------------
    def push_adapter(self) -> str:
        """The adapter name that holds the current weights on the server (pushed if stale)."""
        if self.served and self.served[0] == self.weights_version:
            return self.served[1]
        name = f"policy-{self.weights_version}"
        folder = self.adapter_root / name
        shutil.rmtree(folder, ignore_errors=True)
        self.model.save_pretrained(folder)  # adapter_config.json + adapter_model.safetensors
        self.server.post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        if self.served:
            previous = self.served[1]
            self.server.post("/v1/unload_lora_adapter", {"lora_name": previous})
            shutil.rmtree(self.adapter_root / previous, ignore_errors=True)
        self.served = (self.weights_version, name)
        return name

    def train_step(self, *args, **kwargs) -> dict:
        out = super().train_step(*args, **kwargs)
        self.weights_version += 1
        return out

    def load(self, directory: str | Path) -> None:
        super().load(directory)
        self.weights_version += 1

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.adapter_root, ignore_errors=True)

    # -- sampling -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, prompts: list[str], group_size: int, temperature: float | None = None,
               max_tokens: int | None = None) -> Rollouts:
        t = self.cfg.training
        temperature = t.temperature if temperature is None else temperature
        name = self.push_adapter()
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        # The request's seed comes from the run's RNG: a run is as reproducible as vLLM's
        # kernels allow, and a resumed run draws what the original would have drawn.
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        reply = self.server.post("/v1/completions", {
            "model": name, "prompt": encoded, "n": group_size, "max_tokens": max_tokens or t.max_tokens,
            "temperature": max(temperature, 0.0), "top_p": t.top_p if temperature > 0 else 1.0,
            "top_k": 0, "seed": seed, "logprobs": 0, "return_token_ids": True,
            "stop_token_ids": self.eos_ids, "skip_special_tokens": False})
        choices = sorted(reply["choices"], key=lambda c: c["index"])
        if len(choices) != len(prompts) * group_size:
            raise VllmError(f"vLLM returned {len(choices)} completions for {len(prompts)} prompts "
                            f"× {group_size}")
        rollouts = self._rollouts(prompts, encoded, group_size, choices)
        if self.want_entropy:  # vLLM returns no full distribution: one HF pass gives entropies
            rows = torch.arange(len(choices), device=self.device)
            _, ent = self.forward_logprobs(rollouts, rows, want_entropy=True)
            rollouts.entropies = torch.where(rollouts.mask, ent.float(), torch.zeros_like(ent.float()))
        return rollouts

    def _rollouts(self, prompts: list[str], encoded: list[list[int]], group_size: int,
                  choices: list[dict]) -> Rollouts:
        tokens = [list(c["token_ids"]) for c in choices]  # through the EOS, which vLLM returns last
        logprobs = [[0.0 if x is None else float(x) for x in c["logprobs"]["token_logprobs"]]
                    for c in choices]
        hit_max = [not (t and t[-1] in self.eos_ids) for t in tokens]
        return rollouts_from_tokens(self.tokenizer, prompts, group_size, encoded, tokens, logprobs,
                                    hit_max, self.device)
