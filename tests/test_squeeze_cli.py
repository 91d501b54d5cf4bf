"""`retrain squeeze` as a real subprocess: JSON, analysis.json, config mode, wandb offline."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.adapters import write_adapter

REPO = Path(__file__).resolve().parent.parent


def squeeze(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "offline"}
    full_env.pop("WANDB_PROJECT", None)  # only the tests that ask for wandb get it
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "retrain_core.cli", "squeeze", *args],
                          capture_output=True, text=True, env=full_env, cwd=REPO, timeout=120,
                          check=False)


def squeeze_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """The same CLI code path without paying a Python + torch start-up per call."""
    from retrain_core.cli import main

    code = main(["squeeze", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def spec_adapter(tmp_path: Path) -> Path:
    a = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return write_adapter(tmp_path / "spec", {"model.layers.0.mlp.up_proj": (a, torch.eye(2))}, rank=2)


def test_json_output_and_analysis_out(spec_adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "camp" / "squeeze" / "analysis.json"
    proc = squeeze(str(spec_adapter), "--threshold", "0.9", "--json", "--analysis-out", str(out))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)  # stdout holds nothing but the JSON document
    assert printed["recommended_rank"] == 1 and printed["source_rank"] == 2
    # progress goes to stderr: what is read, then how long it took
    assert "analysing" in proc.stderr and "1 modules analysed in" in proc.stderr
    assert [row["rank"] for row in printed["rows"]] == [1, 2]
    assert [row["recommended"] for row in printed["rows"]] == [True, False]
    assert json.loads(out.read_text()) == printed
    assert not [p for p in out.parent.iterdir() if p.name != "analysis.json"]  # no tmp left


def test_text_table_and_target_ranks_flag(spec_adapter: Path, capsys) -> None:
    code, out, err = squeeze_in_process(capsys, str(spec_adapter), "--target-ranks", "2")
    assert code == 0, err
    assert "recommended rank: 2" in out and "worst module" in out
    code, out, err = squeeze_in_process(capsys, str(spec_adapter), "--target-ranks", "1,x")
    assert code == 2 and "--target-ranks" in err


def test_compress_flags(spec_adapter: Path, tmp_path: Path, capsys) -> None:
    code, out, err = squeeze_in_process(capsys, str(spec_adapter), "--threshold", "0.9",
                                        "--compress-to", "0", "--output", str(tmp_path / "small"),
                                        "--json")
    assert code == 0, err
    assert json.loads(out)["compressed"]["rank"] == 1
    config = json.loads((tmp_path / "small" / "adapter_config.json").read_text())
    assert config["r"] == 1 and config["lora_alpha"] == 2
    code, out, err = squeeze_in_process(capsys, str(spec_adapter), "--compress-to", "4",
                                        "--output", str(tmp_path / "big"))
    assert code == 1 and "source rank is 2" in err
    code, out, err = squeeze_in_process(capsys, str(spec_adapter), "--compress-to", "1")
    assert code == 2 and "--output" in err


def test_errors_exit_nonzero_with_the_file_named(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_model.safetensors").write_bytes(b"\x01\x02garbage")
    code, _out, err = squeeze_in_process(capsys, str(broken))
    assert code == 1
    assert "adapter_model.safetensors: not a readable safetensors file" in err


def test_config_file_mode(spec_adapter: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    config = tmp_path / "squeeze.toml"
    config.write_text(f'[squeeze]\nadapter_path = "{spec_adapter.name}"\n'
                      f'min_variance_retention = 0.9\noutput_path = "{tmp_path / "out"}"\n')
    monkeypatch.chdir(tmp_path.parent)  # adapter_path resolves against the config's dir
    code, out, err = squeeze_in_process(capsys, str(config), "--json")
    assert code == 0, err
    assert json.loads(out)["recommended_rank"] == 1
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["r"] == 1
    # A flag overrides the file.
    code, out, err = squeeze_in_process(capsys, str(config), "--json", "--threshold", "0.95")
    assert json.loads(out)["recommended_rank"] == 2
    config.write_text("[squeeze]\nmin_variance_retention = 0.9\nadapter_pth = 'x'\n")
    code, out, err = squeeze_in_process(capsys, str(config))
    assert code == 2 and "adapter_pth" in err


def _wandb_records(run_file: Path) -> list:
    """Records of an offline `.wandb` file (a LevelDB-style log of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending, records = run_file.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full / first
            pending = chunk
        elif kind in (3, 4):  # middle / last
            pending += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@pytest.mark.slow
def test_wandb_offline_run(spec_adapter: Path, tmp_path: Path) -> None:
    proc = squeeze(str(spec_adapter), "--threshold", "0.9",
                   env={"WANDB_PROJECT": "squeeze-test", "WANDB_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("files/media/table/squeeze/variance_table_*.table.json"))
    records = _wandb_records(next(runs[0].glob("run-*.wandb")))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "squeeze-analysis" and run.project == "squeeze-test"
    assert list(run.tags) == ["squeeze", "rank-1"]
    summary = {item.key: json.loads(item.value_json) for r in records
               if r.WhichOneof("record_type") == "summary" for item in r.summary.update if item.key}
    assert summary["squeeze/recommended_rank"] == 1
    assert summary["squeeze/source_rank"] == 2
    assert summary["squeeze/min_variance_retention"] == 0.9
    assert summary["squeeze/num_layers"] == 1
    table = json.loads(next(runs[0].glob("files/media/table/squeeze/*.table.json")).read_text())
    assert [row[0] for row in table["data"]] == [1, 2]
    assert table["columns"][:4] == ["rank", "mean_variance", "min_variance", "max_variance"]
