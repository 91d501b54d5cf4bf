"""Session-wide test environment.

The tiny model is built once into a cache shared by every xdist worker (the builder
holds a file lock), wandb never touches the network, and torch stays on one thread per
process so two workers do not fight over the two cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("RETRAIN_CACHE", str(REPO / ".cache" / "retrain-test"))
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """Path of the built-in tiny model (built on first use, then cached)."""
    from retrain_core.models.tiny import ensure_tiny_model

    return ensure_tiny_model()
