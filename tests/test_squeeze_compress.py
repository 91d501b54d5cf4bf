"""LoRA-Squeeze compression: exact at full rank, best rank-k, loadable by PEFT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retrain_core.squeeze import SqueezeError, analyze_adapter, compress_adapter
from retrain_core.squeeze.compress import scaled_alpha
from tests.support.adapters import write_adapter

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _pairs(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    tensors = load_file(str(path / "adapter_model.safetensors"))
    return {key[: -len(".lora_A.weight")]: (tensors[key], tensors[key.replace("lora_A", "lora_B")])
            for key in tensors if key.endswith(".lora_A.weight")}


def _truncated(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(b.double() @ a.double(), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k]


@pytest.fixture
def random_adapter(tmp_path: Path) -> Path:
    gen = torch.Generator().manual_seed(3)
    pairs = {f"model.layers.{i}.mlp.{name}": (torch.randn(6, n_in, generator=gen),
                                               torch.randn(n_out, 6, generator=gen))
             for i in range(2) for name, n_in, n_out in [("up_proj", 10, 14), ("down_proj", 14, 10)]}
    pairs["model.layers.0.self_attn.k_proj"] = (torch.randn(6, 4, generator=gen),
                                               torch.randn(3, 6, generator=gen))  # rank bound 3
    return write_adapter(tmp_path / "src", pairs, rank=6, alpha=12)


def test_full_rank_compression_reproduces_the_product(random_adapter: Path, tmp_path: Path) -> None:
    out = compress_adapter(random_adapter, 6, tmp_path / "full")
    before, after = _pairs(random_adapter), _pairs(out)
    assert before.keys() == after.keys()
    for name, (a, b) in before.items():
        new_a, new_b = after[name]
        assert new_a.shape == a.shape and new_b.shape == b.shape
        assert torch.allclose(new_b @ new_a, b @ a, atol=1e-4 * float((b @ a).abs().max())), name
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 6 and config["lora_alpha"] == 12  # α/r unchanged


def test_rank_k_is_the_truncated_svd(random_adapter: Path, tmp_path: Path) -> None:
    out = compress_adapter(random_adapter, 2, tmp_path / "k2")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 4  # 12·2/6: same scaling α/r = 2
    assert config["target_modules"] == json.loads(
        (random_adapter / "adapter_config.json").read_text())["target_modules"]
    for name, (a, b) in _pairs(random_adapter).items():
        new_a, new_b = _pairs(out)[name]
        assert new_a.shape == (2, a.shape[1]) and new_b.shape == (b.shape[0], 2)
        expected = _truncated(a, b, 2)
        assert torch.allclose((new_b @ new_a).double(), expected, atol=1e-4 * float(expected.abs().max()))
    # The compressed adapter's analysis: everything is in its 2 directions.
    assert analyze_adapter(out).rows[-1].rank == 2


def test_never_writes_a_rank_above_the_source(random_adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="cannot compress to rank 7: the source rank is 6"):
        compress_adapter(random_adapter, 7, tmp_path / "big")
    assert not (tmp_path / "big").exists()
    with pytest.raises(SqueezeError, match="positive integer"):
        compress_adapter(random_adapter, 0, tmp_path / "zero")
    with pytest.raises(SqueezeError, match="must differ from the source"):
        compress_adapter(random_adapter, 2, random_adapter)


def test_missing_config_is_a_clear_error(random_adapter: Path, tmp_path: Path) -> None:
    (random_adapter / "adapter_config.json").unlink()
    with pytest.raises(SqueezeError, match="no adapter_config.json"):
        compress_adapter(random_adapter, 2, tmp_path / "out")


def test_alpha_scaling_rules() -> None:
    assert scaled_alpha(64, 32, 8, rslora=False) == 16
    assert scaled_alpha(16, 32, 8, rslora=True) == 8  # α/√r kept: 16/√32 = 8/√8
    assert scaled_alpha(10, 4, 3, rslora=False) == pytest.approx(7.5)


def _tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


@pytest.mark.slow
def test_compressed_adapter_loads_in_peft_and_matches_rank_k_logits(tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    base_dir = tmp_path / "base"
    _tiny_llama(0).save_pretrained(base_dir)
    from transformers import LlamaForCausalLM

    model = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    with torch.no_grad():  # B starts at zero: give the adapter something to compress
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    model.save_pretrained(tmp_path / "adapter")
    out = compress_adapter(tmp_path / "adapter", 3, tmp_path / "k3")

    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    loaded = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), out).eval()
    assert loaded.peft_config["default"].r == 3
    with torch.no_grad():
        got = loaded(ids).logits

    # Reference: the base model with W + (α/r)·trunc_3(B·A) merged by hand.
    reference = LlamaForCausalLM.from_pretrained(base_dir).eval()
    scaling = 16 / 8
    modules = dict(reference.named_modules())
    for name, (a, b) in _pairs(tmp_path / "adapter").items():
        layer = modules[name.removeprefix("base_model.model.")]
        with torch.no_grad():
            layer.weight += (scaling * _truncated(a, b, 3)).float()
    with torch.no_grad():
        expected = reference(ids).logits
        original = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir),
                                             tmp_path / "adapter").eval()(ids).logits
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert not torch.allclose(got, original, atol=1e-3)  # rank 3 of 8 really changed something
