"""Keys whose None means "the program decides" (schema.unset_as): every TOML spelling of
unset (the key left out, the 0 or "" older files wrote, "auto") loads to None and behaves
the same, and the files retrain writes keep the 0 / "" spelling."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from retrain_core.config import (
    ConfigError,
    config_from_dict,
    config_to_toml,
    load_campaign,
    load_campaign_text,
)
from retrain_core.config.rules import UNSET_SPELLINGS
from retrain_core.explain import explain_dict
from retrain_core.plan import estimate
from retrain_core.throttle import NullThrottle, Throttle, open_throttle
from retrain_core.train import memory
from retrain_core.train.vllm_engine import VllmServer
from tests.support.adapters import write_adapter

CAMPAIGN = """\
[model]
model = "builtin:tiny-arith"
lora_rank = 4
{model}
[campaign]
seeds = [1, 2]
parallel = true
{campaign}
conditions = [{{ advantage_mode = "grpo", transform_mode = "none" }},
              {{ advantage_mode = "maxrl", transform_mode = "none" }},
              {{ advantage_mode = "maxrl", transform_mode = "gtpo" }}]
"""

# Each converted key with the spellings of "unset" a file may use ("" = the key left out).
SPELLINGS = {
    "campaign.max_workers": ["", "max_workers = 0", 'max_workers = "auto"'],
    "campaign.grace_seconds": ["", "grace_seconds = 0", "grace_seconds = 0.0", 'grace_seconds = "auto"'],
    "backend.throttle_dir": ["", 'throttle_dir = ""'],
    "model.lora_alpha": ["", "lora_alpha = 0", "lora_alpha = 0.0", 'lora_alpha = "auto"'],
    "inference.gpu_memory_utilization": ["", "gpu_memory_utilization = 0", 'gpu_memory_utilization = "auto"'],
    "inference.sampling_memory_gb": ["", "sampling_memory_gb = 0", 'sampling_memory_gb = "auto"'],
    "training.micro_batch_tokens": ["", "micro_batch_tokens = 0", 'micro_batch_tokens = "auto"'],
    "data.max_examples": ["", "max_examples = 0", 'max_examples = "auto"'],
    "squeeze.source_rank": ["", "source_rank = 0", 'source_rank = "auto"'],
    "squeeze.compress_to": ["", "compress_to = 0", 'compress_to = "auto"'],
}


def load(text: str):
    return load_campaign_text(text, "unset.toml", resolve=False)


def test_every_unset_key_is_listed_here():
    assert set(SPELLINGS) == set(UNSET_SPELLINGS)


@pytest.mark.parametrize("dotted,line", [(k, line) for k, lines in SPELLINGS.items() for line in lines])
def test_each_spelling_of_unset_loads_to_none(dotted, line):
    section, name = dotted.split(".")
    campaign = load(f"[{section}]\n{line}\n")
    holder = campaign.settings if section == "campaign" else getattr(campaign.base, section)
    assert getattr(holder, name) is None


def test_set_values_stay_and_bad_ones_name_auto():
    campaign = load("[model]\nlora_alpha = 16\n[campaign]\nmax_workers = 3\n")
    assert campaign.base.model.lora_alpha == 16.0 and campaign.settings.max_workers == 3
    for text, message in [('[model]\nlora_alpha = "all"', 'expected a number or "auto", found string "all"'),
                          ("[campaign]\nmax_workers = false", 'expected an integer or "auto"'),
                          ("[campaign]\nmax_workers = 0.0", 'expected an integer or "auto"'),
                          ("[campaign]\nmax_workers = -1", "expected an integer >= 0"),
                          ("[inference]\ngpu_memory_utilization = 1.5", "a share in (0, 1]")]:
        with pytest.raises(ConfigError) as info:
            load(text)
        assert message in str(info.value), (text, str(info.value))


def test_auto_is_a_folder_name_for_the_throttle_dir():
    """A path takes no "auto": `throttle_dir = "auto"` is the folder ./auto, as before."""
    assert load('[backend]\nthrottle_dir = "auto"\n').base.backend.throttle_dir == "auto"
    with pytest.raises(ConfigError, match='expected a string, found integer 0'):
        load("[backend]\nthrottle_dir = 0\n")


@pytest.mark.parametrize("line", SPELLINGS["campaign.max_workers"])
def test_max_workers_unset_runs_every_run_at_once(line):
    campaign = load(CAMPAIGN.format(model="", campaign=line))
    est = estimate(campaign, step_time_s=1.0)
    assert est.effective_parallelism == 6  # 3 conditions × 2 seeds, no GPU pool on this box
    assert explain_dict(campaign, est)["settings"]["max_workers"] == 0  # --json keeps its 0


def test_max_workers_set_still_bounds():
    campaign = load(CAMPAIGN.format(model="", campaign="max_workers = 4"))
    assert estimate(campaign, step_time_s=1.0).effective_parallelism == 4


def test_condition_labels_keep_the_file_spelling():
    """An override to unset is labelled with its 0, whichever spelling: run names are stable,
    and two spellings of the same condition are one condition (a duplicate label)."""
    conditions = ('[{ advantage_mode = "grpo", transform_mode = "none", lora_alpha = "auto" },'
                  ' { advantage_mode = "grpo", transform_mode = "none", lora_alpha = 8 }]')
    campaign = load(f"[campaign]\nseeds = [1]\nconditions = {conditions}\n")
    assert [c.label for c in campaign.conditions] == ["grpo+none~model.lora_alpha=0.0",
                                                      "grpo+none~model.lora_alpha=8.0"]
    assert campaign.conditions[0].overrides == {"model.lora_alpha": 0.0}
    assert campaign.runs[0].config.model.lora_alpha is None
    twice = ('[{ advantage_mode = "grpo", transform_mode = "none", lora_alpha = "auto" },'
             ' { advantage_mode = "grpo", transform_mode = "none", lora_alpha = 0 }]')
    with pytest.raises(ConfigError, match="duplicate condition label"):
        load(f"[campaign]\nseeds = [1]\nconditions = {twice}\n")


def test_config_toml_round_trips_and_keeps_the_zero_spelling():
    campaign = load("[model]\nlora_alpha = \"auto\"\n[squeeze]\ncompress_to = 4\n")
    cfg = campaign.base
    written = tomllib.loads(config_to_toml(cfg))
    assert written["model"]["lora_alpha"] == 0.0 and written["backend"]["throttle_dir"] == ""
    assert written["training"]["micro_batch_tokens"] == 0 and written["squeeze"]["compress_to"] == 4
    assert config_from_dict(written) == cfg
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("line", SPELLINGS["model.lora_alpha"])
def test_lora_alpha_unset_is_twice_the_rank_in_peft(tiny_model_dir, line):
    from retrain_core.train.backend import LocalBackend

    cfg = load(f'[model]\nmodel = "{tiny_model_dir}"\nlora_rank = 4\n{line}\n'
               '[backend]\ndevices = "cpu"\n').base
    backend = LocalBackend(cfg)
    assert backend.model.peft_config["default"].lora_alpha == 8


@pytest.mark.parametrize("line", SPELLINGS["backend.throttle_dir"])
def test_throttle_dir_unset_means_no_throttle(line):
    cfg = load(f"[backend]\nmax_concurrent = 1\n{line}\n").base
    assert isinstance(open_throttle(cfg.backend.throttle_dir, cfg.backend.max_concurrent), NullThrottle)


def test_throttle_dir_set_throttles(tmp_path):
    cfg = load(f'[backend]\nmax_concurrent = 1\nthrottle_dir = "{tmp_path}"\n').base
    assert isinstance(open_throttle(cfg.backend.throttle_dir, 1), Throttle)


@pytest.mark.parametrize("key", ["inference.sampling_memory_gb", "training.micro_batch_tokens"])
def test_memory_budgets_unset_are_automatic(key):
    cpu = torch.device("cpu")
    for line in SPELLINGS[key]:
        cfg = load(f"[{key.split('.')[0]}]\n{line}\n").base
        assert memory.sampling_budget_bytes(cfg.inference, cpu) is None  # CPU: no chunks
        assert memory.micro_batch_token_budget(cfg.training, None, 4, cpu, False) is None


@pytest.mark.parametrize("line", SPELLINGS["inference.gpu_memory_utilization"])
def test_vllm_share_unset_is_the_default(tmp_path, line):
    command = tmp_path / "vllm"
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    inf = load(f"[inference]\n{line}\n").base.inference
    args = VllmServer("m", tmp_path, lora_rank=4, dtype="float32", on_gpu=True, command=str(command),
                      memory_share=inf.gpu_memory_utilization).args
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.35"


@pytest.mark.parametrize("line", SPELLINGS["squeeze.compress_to"])
def test_squeeze_compress_to_unset_is_the_recommended_rank(tmp_path, capsys, line):
    from retrain_core.cli import main

    a = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    adapter = write_adapter(tmp_path / "spec", {"model.layers.0.mlp.up_proj": (a, torch.eye(2))}, rank=2)
    config = tmp_path / "squeeze.toml"
    config.write_text(f'[squeeze]\nadapter_path = "{adapter}"\noutput_path = "{tmp_path / "small"}"\n'
                      f"min_variance_retention = 0.9\n{line}\n")
    assert main(["squeeze", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["recommended_rank"] == 1 and report["compressed"]["rank"] == 1
    assert report["source_rank"] == 2  # source_rank unset: read from the adapter


def test_campaign_folder_keeps_its_zeros(tmp_path: Path):
    from retrain_core.supervisor.campdir import create_campaign_dir

    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN.format(model='lora_alpha = "auto"', campaign='max_workers = "auto"')
                    + '\n[backend]\ndevices = "cpu"\nmax_concurrent = 2\n')
    root = create_campaign_dir(load_campaign(path), tmp_path / "logs")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["max_workers"] == 0 and manifest["grace_seconds"] == 0.0
    assert manifest["squeeze"]["source_rank"] == 0
    run_config = tomllib.loads((root / "runs" / "grpo+none_s1" / "config.toml").read_text())
    assert run_config["model"]["lora_alpha"] == 0.0
    assert run_config["backend"]["throttle_dir"] == str((root / "throttle").resolve())


def test_max_examples_unset_is_every_example():
    from retrain_core.tasks.data import load_examples

    every = len(load_examples("arithmetic"))
    for line in SPELLINGS["data.max_examples"]:
        cfg = load(f"[data]\nsource = \"arithmetic\"\n{line}\n").base
        assert len(load_examples(cfg.data.source, cfg.data.max_examples)) == every > 5
    assert len(load_examples("arithmetic", load("[data]\nmax_examples = 5\n").base.data.max_examples)) == 5
