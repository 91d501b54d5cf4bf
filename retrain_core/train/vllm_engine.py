"""One run's own `vllm serve`: started, talked to over HTTP, and never left behind.

The server listens on 127.0.0.1 only, on a free port, behind a random API key; its output
goes to `vllm.log` in the run folder. It stays in the trainer's process group (so the
supervisor's kill of the run's group reaches it) and gets SIGTERM from the kernel the
moment the trainer dies, even by SIGKILL (PR_SET_PDEATHSIG); vLLM's own shutdown then ends
its engine-core process. A normal exit, an exception or a stop closes it via `close`
(also registered with atexit).

vLLM lives in its own venv (`make vllm`): it pins a transformers older than ours, so it is
run as a command, never imported.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from retrain_core.tail import tail_lines

PR_SET_PDEATHSIG = 1
LOG_NAME = "vllm.log"
LOG_TAIL_LINES = 30
CPU_KV_CACHE_BYTES = 2 * 2**30  # KV cache of a CPU server: ample for RL batches of a small model
GPU_MEMORY_SHARE = 0.35  # leaves the rest of the GPU to the trainer's own copy of the model
STOP_GRACE_S = 15.0
REPO_ROOT = Path(__file__).resolve().parents[2]


class VllmError(RuntimeError):
    """The vLLM server could not be started or answered with an error; says what and where."""


def resolve_command(command: str, cwd: Path | None = None) -> Path:
    """The `vllm` executable `[inference] vllm_command` names.

    A bare name is looked up on PATH; a relative path is tried against the working folder,
    then against this checkout (where `make vllm` puts `.venv-vllm`)."""
    if os.sep not in command:
        found = shutil.which(command)
        if found:
            return Path(found)
        raise VllmError(f"[inference] vllm_command = {command!r}: not found on PATH. "
                        "Run `make vllm` and leave the default, or give the full path.")
    path = Path(command).expanduser()
    candidates = [path] if path.is_absolute() else [(cwd or Path.cwd()) / path, REPO_ROOT / path]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise VllmError(f"[inference] vllm_command = {command!r}: no executable at {tried}. "
                    "Run `make vllm` to create .venv-vllm, or set engine = \"hf\".")


def vllm_unavailable_reason(cfg) -> str:
    """Why `[inference] engine = "vllm"` cannot run here ("" = it can): no vllm executable."""
    try:
        resolve_command(cfg.inference.vllm_command)
    except VllmError as exc:
        return str(exc)
    return ""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it; vLLM binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _libc_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the supervisor's group kill still applies
        return None


# Looked up here, not in the child: between fork and exec only async-signal-safe work is
# safe when the trainer has threads (dlopen takes a lock another thread may hold).
_PRCTL = _libc_prctl()


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec: SIGTERM to it when the trainer dies."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the trainer died before prctl took effect
        os._exit(1)


def lora_rank_slot(rank: int) -> int:
    """`--max-lora-rank` takes one of vLLM's kernel sizes: the smallest that holds `rank`."""
    for slot in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= slot:
            return slot
    raise VllmError(f"[model] lora_rank = {rank}: vLLM serves LoRA ranks up to 512")


class VllmServer:
    def __init__(self, model: str, run_dir: Path, *, lora_rank: int, dtype: str, on_gpu: bool,
                 command: str = ".venv-vllm/bin/vllm", memory_share: float | None = None,
                 max_model_len: int | None = None, start_timeout_s: float = 600.0,
                 seed: int = 0):
        self.model, self.run_dir = model, Path(run_dir)
        self.command = resolve_command(command)
        self.port, self.api_key = free_port(), secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.run_dir / LOG_NAME
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.started_s: float | None = None  # seconds from launch to healthy
        args = [str(self.command), "serve", model, "--host", "127.0.0.1", "--port", str(self.port),
                "--served-model-name", "base", "--dtype", dtype, "--seed", str(seed),
                "--enable-lora", "--max-lora-rank", str(lora_rank_slot(lora_rank)), "--max-loras", "2",
                # the sampled token's log-prob under the distribution actually sampled from
                # (temperature, top-p/top-k applied), not the raw logits'
                "--logprobs-mode", "processed_logprobs",
                # only the request's sampling settings: not the checkpoint's generation_config
                "--generation-config", "vllm", "--disable-uvicorn-access-log"]
        if max_model_len:
            args += ["--max-model-len", str(max_model_len)]
        if memory_share:  # None (or 0): automatic
            args += ["--gpu-memory-utilization", str(memory_share)]
        elif on_gpu:
            args += ["--gpu-memory-utilization", str(GPU_MEMORY_SHARE)]
        else:  # on CPU the share would be of all host memory: name the KV cache size instead
            args += ["--kv-cache-memory-bytes", str(CPU_KV_CACHE_BYTES)]
        self.args = args

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> VllmServer:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True", VLLM_API_KEY=self.api_key,
                   VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1",
                   PYTHONUNBUFFERED="1")
        # The trainer's venv must not leak into vLLM's interpreter.
        for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(name, None)
        parent = os.getpid()
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.args)}\n".encode().replace(self.api_key.encode(), b"***"))
            log.flush()
            self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env, close_fds=True,
                                            preexec_fn=lambda: _die_with_parent(parent))  # noqa: PLW1509
        atexit.register(self.close)
        try:
            self._wait_healthy()
        except BaseException:
            self.close()
            raise
        self.started_s = time.monotonic() - started
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise VllmError(f"vLLM server exited with code {code} while starting "
                                f"({self.command}); last lines of {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1.0)
        raise VllmError(f"vLLM server not ready after {self.start_timeout_s:.0f} s "
                        f"([inference] vllm_start_timeout_s); last lines of {self.log_path}:\n"
                        f"{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(tail_lines(self.log_path, LOG_TAIL_LINES)) if self.log_path.exists() else "(no log)"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        """SIGTERM (vLLM then ends its engine core), SIGKILL after a grace period."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        atexit.unregister(self.close)

    # -- HTTP ---------------------------------------------------------------------------
    def post(self, path: str, payload: dict, timeout: float = 600.0) -> dict | str:
        """POST JSON; the reply as JSON (or text for the LoRA endpoints that answer text)."""
        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                body = reply.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise VllmError(f"vLLM {path} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            state = "running" if self.alive() else "exited"
            raise VllmError(f"vLLM {path}: {exc} (server {state}); last lines of {self.log_path}:\n"
                            f"{self.log_tail()}") from None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return body
