"""Reading PEFT LoRA adapters: locate the files, pair `lora_A`/`lora_B` per module.

Tensors are opened lazily (safetensors `safe_open` memory-maps the file), so the
analysis reads each weight once, when its shape group is processed, and never holds a
second full copy of a large adapter.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import torch

SAFETENSORS_NAME = "adapter_model.safetensors"
BIN_NAME = "adapter_model.bin"
CONFIG_NAME = "adapter_config.json"

# `<module>.lora_A.weight`, `<module>.lora_A.<adapter>.weight` (an in-memory state dict),
# and the embedding variant `<module>.lora_embedding_A[.<adapter>]`.
_LINEAR_KEY = re.compile(r"^(?P<module>.+?)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_EMBEDDING_KEY = re.compile(r"^(?P<module>.+?)\.lora_embedding_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?$")
_PEFT_PREFIX = "base_model.model."


class SqueezeError(Exception):
    """A problem with an adapter or a squeeze request; the message names the file or module."""


@dataclass(frozen=True)
class LoraModule:
    """One LoRA pair. Shapes are the 2-D views used for the math: A (r, in), B (out, r)."""

    name: str  # display name: PEFT prefix and adapter name stripped
    key_a: str
    key_b: str
    shape_a: tuple[int, ...]  # as stored (conv LoRA weights are 4-D)
    shape_b: tuple[int, ...]
    embedding: bool  # lora_embedding_*: no `.weight` suffix in the key

    @property
    def rank(self) -> int:
        return self.shape_a[0]

    @property
    def matrix_shapes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        a_cols = 1
        for d in self.shape_a[1:]:
            a_cols *= d
        return (self.rank, a_cols), (self.shape_b[0], self.rank)


def adapter_files(path: str | Path) -> tuple[Path, Path | None]:
    """(weights file, config file or None) of an adapter directory or a weights file."""
    path = Path(path)
    if path.is_file():
        config = path.parent / CONFIG_NAME
        return path, config if config.is_file() else None
    if not path.exists():
        raise SqueezeError(f"{path}: no such adapter directory")
    for name in (SAFETENSORS_NAME, BIN_NAME):
        if (path / name).is_file():
            config = path / CONFIG_NAME
            return path / name, config if config.is_file() else None
    raise SqueezeError(f"{path}: no {SAFETENSORS_NAME} (or {BIN_NAME}) in the adapter directory")


def read_adapter_config(path: Path | None) -> dict:
    """adapter_config.json as a dict ({} when absent); a broken file names its line."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SqueezeError(f"{path}: cannot read: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"line {exc.lineno}: " if isinstance(exc, json.JSONDecodeError) else ""
        raise SqueezeError(f"{path}: {where}not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SqueezeError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


class AdapterWeights:
    """Lazy access to an adapter's tensors. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None
        self._tensors: dict[str, torch.Tensor] | None = None

    def __enter__(self) -> Self:
        if self.path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                self._handle = safe_open(str(self.path), framework="pt", device="cpu")
                self._keys = list(self._handle.keys())
            except Exception as exc:  # SafetensorError, OSError: a corrupt or truncated file
                raise SqueezeError(f"{self.path}: not a readable safetensors file ({exc})") from exc
        else:
            try:
                loaded = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # pickle / zip errors on a corrupt file
                raise SqueezeError(f"{self.path}: not a readable torch state dict ({exc})") from exc
            if not isinstance(loaded, dict):
                raise SqueezeError(f"{self.path}: expected a state dict, found {type(loaded).__name__}")
            self._tensors = loaded
            self._keys = list(loaded)
        return self

    def __exit__(self, *exc) -> None:
        self._handle = None
        self._tensors = None

    def names(self) -> list[str]:
        return self._keys

    def shape(self, key: str) -> tuple[int, ...]:
        if self._tensors is not None:
            return tuple(self._tensors[key].shape)
        return tuple(self._handle.get_slice(key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        try:
            if self._tensors is not None:
                return self._tensors[key]
            return self._handle.get_tensor(key)
        except Exception as exc:
            raise SqueezeError(f"{self.path}: cannot read tensor {key!r} ({exc})") from exc


def display_name(module: str, adapter: str | None) -> str:
    name = module.removeprefix(_PEFT_PREFIX)
    return name if adapter in (None, "default") else f"{name}[{adapter}]"


def find_modules(weights: AdapterWeights) -> list[LoraModule]:
    """Every LoRA pair in the file, in file order; a half pair is an error naming the module."""
    halves: dict[tuple[str, str | None, bool], dict[str, str]] = {}
    for key in weights.names():
        match = _LINEAR_KEY.match(key)
        embedding = False
        if match is None:
            match = _EMBEDDING_KEY.match(key)
            embedding = True
        if match is None:
            continue
        ident = (match["module"], match["adapter"], embedding)
        halves.setdefault(ident, {})[match["which"]] = key
    if not halves:
        raise SqueezeError(f"{weights.path}: no lora_A/lora_B tensors found "
                           f"({len(weights.names())} tensors in the file)")
    modules = []
    for (module, adapter, embedding), pair in halves.items():
        name = display_name(module, adapter)
        for which in "AB":
            if which not in pair:
                other = "B" if which == "A" else "A"
                raise SqueezeError(f"{weights.path}: module {name!r} has lora_{other} "
                                   f"({pair[other]}) but no lora_{which}")
        shape_a, shape_b = weights.shape(pair["A"]), weights.shape(pair["B"])
        if len(shape_a) < 2 or len(shape_b) < 2 or shape_b[1] != shape_a[0]:
            raise SqueezeError(f"{weights.path}: module {name!r}: lora_A shape {list(shape_a)} "
                               f"and lora_B shape {list(shape_b)} do not share a rank")
        modules.append(LoraModule(name, pair["A"], pair["B"], shape_a, shape_b, embedding))
    return modules
