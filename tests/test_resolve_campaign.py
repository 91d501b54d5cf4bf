"""Resolution at creation (#10 item 1): broken campaigns are refused before anything exists,
and a campaign whose plugin and data sit next to its TOML runs from anywhere, even after
the originals are gone."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retrain_core.config import ConfigError, load_campaign, load_campaign_text

REPO = Path(__file__).resolve().parent.parent
TINY = """
[model]
model = "builtin:tiny-arith"
lora_rank = 4
[backend]
devices = "cpu"
[training]
batch_size = 2
group_size = 2
max_tokens = 8
max_steps = 2
save_every = 1
"""
FILES = {
    "missing_mod_user.py": "",
    "boom.py": "raise RuntimeError('boom at import')\n",
    "plugs.py": "NOT_CALLABLE = 3\ndef adv(r, g, p):\n    return r\n",
    "bad.jsonl": '{"prompt": "1+1"\n',
    "noanswer.jsonl": '{"prompt": "1+1"}\n',
    "empty.jsonl": "\n",
    "datasrc.py": "def rows():\n    raise ValueError('no database here')\n",
    "emptymodel/README": "not a model\n",
}
RUNS_40K = "[campaign]\nseeds = [" + ", ".join(map(str, range(8000))) + "]\n"
MANY_RUNS = ("[campaign]\nseeds = [" + ", ".join(map(str, range(40))) + "]\nconditions = [\n"
             + "".join(f'  {{ advantage_mode = "grpo", transform_mode = "none", lr = {i + 1}e-5 }},\n'
                       for i in range(50)) + "]\n")

# (id, document, dotted key of the problem, words of its message)
BROKEN = [
    ("unimportable-plugin", '[algorithm]\nadvantage_mode = "nowhere_pkg.adv"\n',
     "algorithm.advantage_mode", "module 'nowhere_pkg' not found"),
    ("plugin-raises-at-import", '[reward]\ntype = "boom.score"\n', "reward.type", "boom at import"),
    ("plugin-missing-function", '[algorithm]\ntransform_mode = "plugs.nothere"\n',
     "algorithm.transform_mode", "no function 'nothere'"),
    ("plugin-not-callable", '[algorithm]\nuncertainty_kind = "plugs.NOT_CALLABLE"\n',
     "algorithm.uncertainty_kind", "not callable"),
    ("plugin-in-condition", ('[campaign]\nseeds = [1]\nconditions = [\n'
                             '  { advantage_mode = "grpo", transform_mode = "none" },\n'
                             '  { advantage_mode = "grpo", transform_mode = "none", '
                             'reward_type = "boom.f" },\n]\n'),
     "campaign.conditions[1].reward_type", "boom at import"),
    ("missing-jsonl", '[data]\nsource = "jsonl:data/train.jsonl"\n', "data.source",
     "jsonl file not found"),
    ("jsonl-bad-json", '[data]\nsource = "jsonl:bad.jsonl"\n', "data.source", "bad.jsonl:1: invalid JSON"),
    ("jsonl-no-answer", '[data]\nsource = "jsonl:noanswer.jsonl"\n', "data.source", "'answer'"),
    ("jsonl-empty", '[data]\nsource = "jsonl:empty.jsonl"\n', "data.source", "yielded no examples"),
    ("data-plugin-raises", '[data]\nsource = "datasrc.rows"\n', "data.source", "no database here"),
    ("unknown-data-source", '[data]\nsource = "gsm8k"\n', "data.source", "expected one of"),
    ("builtin-nope", '[model]\nmodel = "builtin:nope"\n', "model.model", "unknown built-in model"),
    ("missing-model-folder", '[model]\nmodel = "./models/mine"\n', "model.model",
     "local model folder not found"),
    ("folder-not-a-model", '[model]\nmodel = "emptymodel"\n', "model.model", "no config.json"),
    ("steps-1e20", "[campaign]\nseeds = [1]\nmax_steps = 100000000000000000000\n",
     "campaign.max_steps", "at most 1,000,000"),
    ("training-steps-1e12", "[training]\nmax_steps = 1000000000000\n", "training.max_steps",
     "at most 1,000,000"),
    ("40000-runs", RUNS_40K, "campaign.seeds", "at most 1,000 seeds"),
    ("2000-runs", MANY_RUNS, "campaign.seeds", "2,000 runs"),
    ("seed-out-of-range", "[campaign]\nseeds = [5000000000]\n", "campaign.seeds[0]", "0..4294967295"),
    ("unsupported-uncertainty", '[algorithm]\nuncertainty_kind = "varentropy"\n',
     "algorithm.uncertainty_kind", "expected one of"),
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def retrain(args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "retrain_core.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=240, env=env, check=False)


@pytest.mark.parametrize(("document", "key", "words"), [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_broken_campaign_is_refused_everywhere_and_creates_nothing(folder, document, key, words):
    toml = folder / "c.toml"
    toml.write_text(document)
    # The TUI's live validation calls exactly this loader.
    with pytest.raises(ConfigError) as info:
        load_campaign_text(document, toml)
    problem = next(p for p in info.value.problems if p.key == key)
    assert words in problem.message and problem.line > 0 and problem.file == str(toml)
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    explained = retrain(["explain", toml], elsewhere)
    assert explained.returncode == 2 and f"{toml}:{problem.line}: {key}: " in explained.stderr
    assert "Traceback" not in explained.stderr
    launched = retrain(["campaign", toml, "--logs-dir", folder / "logs"], elsewhere)
    assert launched.returncode == 2 and f"{toml}:{problem.line}: {key}: " in launched.stderr
    assert "Traceback" not in launched.stderr
    assert not (folder / "logs").exists() and os.listdir(elsewhere) == []


def test_unchanged_document_is_revalidated_from_cache_and_an_edit_is_seen(folder):
    toml = folder / "c.toml"
    plugin = folder / "live.py"
    plugin.write_text("def score(c, a):\n    return 1.0\n")
    document = '[reward]\ntype = "live.score"\n'
    assert load_campaign_text(document, toml).base.reward.type == "live.score"
    plugin.write_text("raise ImportError('edited')\n")
    os.utime(plugin, ns=(plugin.stat().st_atime_ns, plugin.stat().st_mtime_ns + 10**9))
    with pytest.raises(ConfigError, match="edited"):
        load_campaign_text(document, toml)


def _write_self_contained(folder: Path) -> Path:
    exp = folder / "exp"
    (exp / "data").mkdir(parents=True)
    (exp / "my_reward.py").write_text(textwrap.dedent("""\
        from retrain_core.tasks.answers import boxed_reward

        def score(completion, answer):
            return boxed_reward(completion, answer)
        """))
    rows = [{"prompt": f"{a}+{b}=?", "answer": str(a + b)} for a in range(5) for b in range(5)]
    (exp / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    toml = exp / "c.toml"
    toml.write_text("[campaign]\nseeds = [3]\nconditions = [{ advantage_mode = \"grpo\", "
                    "transform_mode = \"none\" }]\n" + TINY
                    + '[reward]\ntype = "my_reward.score"\n[data]\nsource = "jsonl:data/train.jsonl"\n')
    return toml


def _succeeded(root: Path) -> dict:
    state = json.loads((root / "state.json").read_text())
    return {name: run["status"] for name, run in state["runs"].items()}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_plugin_and_data_next_to_the_toml_run_from_anywhere_and_after_deletion(tmp_path, tiny_model_dir):
    toml = _write_self_contained(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RETRAIN_TRAINER_CMD"}
    # 1. Launched from another folder: the plugin and the data are found next to the TOML.
    res = retrain(["campaign", toml, "--logs-dir", tmp_path / "logs", "--foreground"], elsewhere, env)
    root = next((tmp_path / "logs").glob("campaign_*"))
    assert _succeeded(root) == {"grpo+none_s3": "succeeded"}, res.stdout + res.stderr
    manifest = json.loads((root / "manifest.json").read_text())
    copies = {f["copy"]: f for f in manifest["files"]}
    assert set(copies) == {"runs/grpo+none_s3/my_reward.py", "data/train.jsonl"}
    for entry in copies.values():
        assert len(entry["sha256"]) == 64 and Path(entry["source"]).is_file()
    run_cfg = (root / "runs" / "grpo+none_s3" / "config.toml").read_text()
    assert 'source = "jsonl:../../data/train.jsonl"' in run_cfg
    assert len((root / "runs" / "grpo+none_s3" / "metrics.jsonl").read_text().splitlines()) == 2

    # 2. A second campaign created (not started), then the originals are deleted: resumed
    #    from a third folder, it runs from its own copies only.
    from retrain_core.supervisor.campdir import create_campaign_dir

    second = create_campaign_dir(load_campaign(toml), tmp_path / "logs2")
    shutil.rmtree(toml.parent)
    third = tmp_path / "third"
    third.mkdir()
    res = retrain(["campaign", "--resume", second, "--foreground"], third, env)
    assert _succeeded(second) == {"grpo+none_s3": "succeeded"}, res.stdout + res.stderr
    assert len((second / "runs" / "grpo+none_s3" / "metrics.jsonl").read_text().splitlines()) == 2


def test_hub_model_missing_offline_is_refused_at_launch_and_noted_online(folder):
    toml = folder / "c.toml"
    toml.write_text('[campaign]\nseeds = [1]\n[model]\nmodel = "acme/not-cached-model"\n'
                    '[data]\nsource = "arithmetic"\n')
    offline = dict(os.environ, HF_HUB_OFFLINE="1")
    launched = retrain(["campaign", toml, "--logs-dir", folder / "logs"], folder, offline)
    assert launched.returncode == 2 and not (folder / "logs").exists()
    assert f"{toml}:4: model.model: " in launched.stderr and "HF_HUB_OFFLINE" in launched.stderr
    explained = retrain(["explain", toml], folder, offline)
    assert explained.returncode == 0 and f"Note: {toml}:4: model.model: " in explained.stdout
    online = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with socket.socket() as hub:  # a "hub" that answers: this box itself has no network
        hub.bind(("127.0.0.1", 0))
        hub.listen()
        online["HF_ENDPOINT"] = f"http://127.0.0.1:{hub.getsockname()[1]}"
        explained = retrain(["explain", toml], folder, online)
    assert explained.returncode == 0 and "will be downloaded from the hub" in explained.stdout


def test_local_model_folder_is_relative_to_the_toml_and_absolute_in_run_configs(folder, tiny_model_dir,
                                                                               monkeypatch):
    exp = folder / "exp"
    shutil.copytree(tiny_model_dir, exp / "models" / "tiny")
    toml = exp / "c.toml"
    toml.write_text('[campaign]\nseeds = [1]\nconditions = [{ advantage_mode = "grpo", '
                    'transform_mode = "none" }]\n[model]\nmodel = "models/tiny"\n'
                    '[data]\nsource = "arithmetic"\n')
    from retrain_core.supervisor.campdir import create_campaign_dir

    monkeypatch.chdir(folder)  # anywhere but the TOML's folder
    root = create_campaign_dir(load_campaign(toml), folder / "logs")
    run_cfg = load_campaign(root / "runs" / "grpo+none_s1" / "config.toml")
    assert run_cfg.base.model.model == str((exp / "models" / "tiny").resolve())


def test_an_unreachable_hub_is_noted_at_once_not_retried(tmp_path):
    """Without HF_HUB_OFFLINE on a box with no network, explain must not sit through the hub
    libraries' retries: it sees the hub is unreachable and reads only the local cache."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nmodel = "acme/not-cached-model"\n[data]\nsource = "math"\n')
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: refused at once
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    res = subprocess.run([sys.executable, "-m", "retrain_core.cli", "explain", str(cfg)], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    assert "the hub is not reachable from here" in res.stdout
    if "datasets` package" not in res.stdout:  # with `datasets` installed: its offline mode
        assert "OfflineModeIsEnabled" in res.stdout
