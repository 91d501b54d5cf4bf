"""LoRA-Squeeze analysis: the worked example, singular values vs svdvals(B@A), adapter reading."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from retrain_core.squeeze import SqueezeError, analyze_adapter, render_table
from retrain_core.squeeze.adapter import AdapterWeights, adapter_files, find_modules
from retrain_core.squeeze.analysis import default_target_ranks
from retrain_core.squeeze.svd import singular_values
from tests.support.adapters import write_adapter

SPEC_A = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
SPEC_B = torch.eye(2)


@pytest.fixture
def spec_adapter(tmp_path: Path) -> Path:
    return write_adapter(tmp_path / "spec", {"model.layers.0.mlp.up_proj": (SPEC_A, SPEC_B)}, rank=2)


def test_spec_vector_singular_values_and_variance(spec_adapter: Path) -> None:
    analysis = analyze_adapter(spec_adapter, min_variance_retention=0.95)
    assert torch.allclose(analysis.singular_values[0], torch.tensor([3.0, 1.0], dtype=torch.float64))
    rows = {row.rank: row for row in analysis.rows}
    assert list(rows) == [1, 2]
    assert rows[1].mean == pytest.approx(0.9, abs=1e-12)
    assert rows[2].mean == pytest.approx(1.0, abs=1e-12)
    assert analysis.recommended_rank == 2
    assert analyze_adapter(spec_adapter, min_variance_retention=0.9).recommended_rank == 1


def test_analysis_json_shape(spec_adapter: Path) -> None:
    data = analyze_adapter(spec_adapter, min_variance_retention=0.9).to_dict()
    assert set(data) == {"adapter", "source_rank", "recommended_rank", "threshold",
                         "num_layers", "rows"}
    assert data["source_rank"] == 2 and data["num_layers"] == 1 and data["threshold"] == 0.9
    assert data["rows"][0] == {"rank": 1, "mean": pytest.approx(0.9), "min": pytest.approx(0.9),
                               "max": pytest.approx(0.9), "worst_module": "model.layers.0.mlp.up_proj",
                               "recommended": True}
    json.dumps(data)  # plain JSON types only


def test_table_min_max_and_worst_module(tmp_path: Path) -> None:
    # Module "flat" keeps 1/3 of its energy at rank 1; "peaked" keeps 0.9.
    flat = (torch.eye(3), torch.eye(3))
    peaked = (torch.diag(torch.tensor([3.0, 1.0, 0.0])), torch.eye(3))
    path = write_adapter(tmp_path / "a", {"m.flat": flat, "m.peaked": peaked}, rank=3)
    analysis = analyze_adapter(path, target_ranks=[1, 2, 3])
    row1 = analysis.rows[0]
    assert row1.min == pytest.approx(1 / 3) and row1.max == pytest.approx(0.9)
    assert row1.mean == pytest.approx((1 / 3 + 0.9) / 2)
    assert row1.worst_module == "m.flat"
    text = render_table(analysis)
    assert "m.flat" in text and "recommended rank: 3" in text


def test_zero_adapter_retains_everything(tmp_path: Path) -> None:
    # An untrained LoRA (B = 0) has no energy: V(k) = 1.0 by definition, rank 1 suffices.
    path = write_adapter(tmp_path / "z", {"m.q": (torch.randn(4, 6), torch.zeros(5, 4))}, rank=4)
    analysis = analyze_adapter(path)
    assert [row.mean for row in analysis.rows] == [1.0, 1.0, 1.0]
    assert analysis.recommended_rank == 1


def test_default_and_explicit_target_ranks(spec_adapter: Path) -> None:
    assert default_target_ranks(128) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert default_target_ranks(48) == [1, 2, 4, 8, 16, 32, 48]
    assert default_target_ranks(1) == [1]
    with pytest.raises(SqueezeError, match="exceed the source rank 2"):
        analyze_adapter(spec_adapter, target_ranks=[1, 4])
    with pytest.raises(SqueezeError, match="positive integers"):
        analyze_adapter(spec_adapter, target_ranks=[0])
    with pytest.raises(SqueezeError, match="min_variance_retention"):
        analyze_adapter(spec_adapter, min_variance_retention=1.5)
    with pytest.raises(SqueezeError, match="source_rank = 8"):
        analyze_adapter(spec_adapter, source_rank=8)


def _product_svdvals(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(b.double() @ a.double())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rank=st.integers(1, 12), n_in=st.integers(1, 40), n_out=st.integers(1, 40),
       n_modules=st.integers(1, 3), defect=st.sampled_from(["none", "zero_col", "dup_col", "graded"]),
       seed=st.integers(0, 2**31 - 1), strategy=st.sampled_from(["streamed", "stacked"]),
       chunk_bytes=st.sampled_from([1, 1 << 20]))
def test_singular_values_equal_those_of_the_product(rank, n_in, n_out, n_modules, defect, seed,
                                                    strategy, chunk_bytes) -> None:
    gen = torch.Generator().manual_seed(seed)
    pairs = {}
    for index in range(n_modules):
        a = torch.randn(rank, n_in, generator=gen)
        b = torch.randn(n_out, rank, generator=gen)
        if defect == "zero_col":
            b[:, 0] = 0.0
        elif defect == "dup_col" and rank > 1:
            b[:, 1] = b[:, 0]
        elif defect == "graded":
            b = b * torch.logspace(0, -4, rank)
        pairs[f"model.layers.{index}.self_attn.q_proj"] = (a, b)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_adapter(tmp, pairs, rank=rank)
        weights_path, _ = adapter_files(path)
        with AdapterWeights(weights_path) as weights:
            modules = find_modules(weights)
            ours = singular_values(weights, modules, strategy=strategy, chunk_bytes=chunk_bytes)
    for (a, b), values in zip(pairs.values(), ours, strict=True):
        expected = _product_svdvals(a, b)
        count = min(rank, n_in, n_out)
        assert values.shape == (count,)
        scale = max(float(expected[0]), 1e-30)
        # float64 QR: agreement to 1e-10 of the largest singular value (normwise).
        assert torch.allclose(values, expected[:count], rtol=0, atol=1e-10 * scale), (values, expected)


def _save(path: Path, tensors: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


def test_key_variants_are_paired(tmp_path: Path) -> None:
    a, b = torch.randn(2, 5), torch.randn(4, 2)
    emb_a, emb_b = torch.randn(2, 7), torch.randn(3, 2)
    path = _save(tmp_path / "v", {
        "base_model.model.layers.0.q_proj.lora_A.default.weight": a,
        "base_model.model.layers.0.q_proj.lora_B.default.weight": b,
        "layers.1.v_proj.lora_A.weight": a.clone(),
        "layers.1.v_proj.lora_B.weight": b.clone(),
        "base_model.model.embed_tokens.lora_embedding_A": emb_a,
        "base_model.model.embed_tokens.lora_embedding_B": emb_b,
        "base_model.model.lm_head.weight": torch.randn(3, 3),  # modules_to_save: ignored
    })
    analysis = analyze_adapter(path)
    assert sorted(analysis.module_names) == ["embed_tokens", "layers.0.q_proj", "layers.1.v_proj"]
    assert analysis.source_rank == 2


def test_missing_half_pair_names_the_module(tmp_path: Path) -> None:
    path = _save(tmp_path / "h", {"base_model.model.layers.3.mlp.down_proj.lora_A.weight":
                                  torch.randn(2, 5)})
    with pytest.raises(SqueezeError, match=r"layers\.3\.mlp\.down_proj.*no lora_B"):
        analyze_adapter(path)


def test_rank_mismatch_between_a_and_b(tmp_path: Path) -> None:
    path = _save(tmp_path / "m", {"x.lora_A.weight": torch.randn(2, 5), "x.lora_B.weight": torch.randn(4, 3)})
    with pytest.raises(SqueezeError, match="do not share a rank"):
        analyze_adapter(path)


def test_no_lora_tensors(tmp_path: Path) -> None:
    path = _save(tmp_path / "n", {"w": torch.randn(2, 2)})
    with pytest.raises(SqueezeError, match="no lora_A/lora_B tensors"):
        analyze_adapter(path)


def test_missing_directory_and_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="no such adapter directory"):
        analyze_adapter(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SqueezeError, match="no adapter_model.safetensors"):
        analyze_adapter(tmp_path / "empty")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_weights_file_names_the_file(spec_adapter: Path, damage: str) -> None:
    weights = spec_adapter / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"garbage": b"\x00not a safetensors file" * 10,
                         "truncated": data[: len(data) - 7], "empty": b""}[damage])
    with pytest.raises(SqueezeError, match="adapter_model.safetensors: not a readable safetensors"):
        analyze_adapter(spec_adapter)


def test_corrupt_config_names_file_and_line(spec_adapter: Path) -> None:
    (spec_adapter / "adapter_config.json").write_text('{\n  "r": 2,\n  "lora_alpha": \n}')
    with pytest.raises(SqueezeError, match=r"adapter_config.json: line 4: not valid JSON"):
        analyze_adapter(spec_adapter)


def test_torch_bin_adapter(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    torch.save({"m.lora_A.weight": SPEC_A, "m.lora_B.weight": SPEC_B}, tmp_path / "bin" / "adapter_model.bin")
    assert analyze_adapter(tmp_path / "bin", min_variance_retention=0.9).recommended_rank == 1
    (tmp_path / "bin" / "adapter_model.bin").write_bytes(b"broken")
    with pytest.raises(SqueezeError, match="adapter_model.bin: not a readable torch state dict"):
        analyze_adapter(tmp_path / "bin")


def test_weights_file_path_accepted_and_bf16(tmp_path: Path) -> None:
    path = write_adapter(tmp_path / "bf", {"m.q": (SPEC_A.bfloat16(), SPEC_B.bfloat16())}, rank=2)
    analysis = analyze_adapter(path / "adapter_model.safetensors", min_variance_retention=0.9)
    assert analysis.recommended_rank == 1


def test_bad_device_is_a_clear_error(spec_adapter: Path) -> None:
    with pytest.raises(SqueezeError, match="not a torch device"):
        analyze_adapter(spec_adapter, device="gpu0")


def test_worker_threads_give_the_same_values_and_restore_threads(tmp_path: Path) -> None:
    # The CPU path spreads modules over torch.get_num_threads() single-threaded workers.
    gen = torch.Generator().manual_seed(5)
    pairs = {f"model.layers.{i}.mlp.up_proj": (torch.randn(8, 30, generator=gen),
                                              torch.randn(20, 8, generator=gen)) for i in range(6)}
    path = write_adapter(tmp_path / "p", pairs, rank=8)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        analysis = analyze_adapter(path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    for (a, b), values in zip(pairs.values(), analysis.singular_values, strict=True):
        expected = _product_svdvals(a, b)[:8]
        assert torch.allclose(values, expected, rtol=0, atol=1e-5 * float(expected[0]))


@pytest.mark.parametrize("strategy", ["streamed", "stacked"])
def test_threshold_boundary_is_exact(tmp_path: Path, strategy: str) -> None:
    """B·A with singular values 2√2 and √2 keeps exactly 0.8 at rank 1: a 0.8 threshold
    recommends rank 1 (float32 arithmetic gave 0.79999997 and recommended rank 2)."""
    a = torch.tensor([[2.0, 2.0, 0.0], [1.0, -1.0, 0.0]])
    path = write_adapter(tmp_path / "edge", {"model.layers.0.mlp.up_proj": (a, torch.eye(2))}, rank=2)
    with AdapterWeights(adapter_files(path)[0]) as weights:
        values = singular_values(weights, find_modules(weights), strategy=strategy)[0]
    assert values.tolist() == pytest.approx([8 ** 0.5, 2 ** 0.5], rel=1e-14)
    analysis = analyze_adapter(path, min_variance_retention=0.8)
    assert analysis.rows[0].mean == pytest.approx(0.8, abs=1e-14)
    assert analysis.recommended_rank == 1
    assert analyze_adapter(path, min_variance_retention=0.8 + 1e-9).recommended_rank == 2
