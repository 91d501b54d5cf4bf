"""A local Tinker-compatible server (SkyRL tx, JAX on CPU) for tests and trying the backend.

`make tinker-server` builds its venv (`.venv-tinker`); then

    .venv/bin/python tools/tinker_server/local_server.py [--port 8000] [--model builtin:tiny-arith]

serves the model on 127.0.0.1 until Ctrl-C, and prints the `TINKER_BASE_URL` to use (any
API key works). Tests use `LocalTinkerServer` as a context manager.

What SkyRL tx 0.3.0 needs that this script provides: a `uv` on PATH (its API server starts
the engine with `uv run … -m tx.tinker.engine`; `bin/uv` runs that module with the server
venv's python), and in the model folder `"tokenizer_class": "PreTrainedTokenizerFast"` and a
top-level `"rope_theta"` (it pins transformers < 5, which reads neither from our files).
Slot 0 of `max_lora_adapters` is the base model's, so it is one more than the runs it serves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parents[2]
SERVER_PYTHON = REPO / ".venv-tinker" / "bin" / "python"
SHIM_DIR = Path(__file__).resolve().parent / "bin"


def server_available() -> str | None:
    """Why the local server cannot start here (None when it can)."""
    if not SERVER_PYTHON.exists():
        return f"the local Tinker server's venv is missing ({SERVER_PYTHON}): run `make tinker-server`"
    return None


def prepare_model(source: str | Path, target: Path) -> Path:
    """A copy of a HF model folder with the two fields SkyRL tx's transformers needs."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    tok_path, cfg_path = target / "tokenizer_config.json", target / "config.json"
    tok = json.loads(tok_path.read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_path.write_text(json.dumps(tok, indent=2))
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalTinkerServer:
    """Start (`with`) and stop a SkyRL tx server on 127.0.0.1 in `work_dir`."""

    def __init__(self, work_dir: str | Path, model: str = "builtin:tiny-arith",
                 max_runs: int = 3, max_lora_rank: int = 8, port: int | None = None):
        self.work_dir = Path(work_dir)
        self.model, self.max_runs, self.max_lora_rank = model, max_runs, max_lora_rank
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.work_dir / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> str:
        from retrain_core.models.tiny import resolve_model_path

        reason = server_available()
        if reason:
            raise RuntimeError(reason)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        model_dir = prepare_model(resolve_model_path(self.model), self.work_dir / "model")
        env = dict(os.environ, PATH=f"{SHIM_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
                   TINKER_SERVER_PYTHON=str(SERVER_PYTHON), JAX_PLATFORMS="cpu",
                   PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)  # the server venv has its own packages
        backend_config = {"max_lora_adapters": self.max_runs + 1, "max_lora_rank": self.max_lora_rank}
        cmd = [str(SERVER_PYTHON), "-m", "tx.tinker.api", "--base-model", str(model_dir),
               "--backend-config", json.dumps(backend_config),
               "--database-url", f"sqlite:///{self.work_dir / 'tinker.db'}",
               "--checkpoints-base", str(self.work_dir / "checkpoints"),
               "--host", "127.0.0.1", "--port", str(self.port)]
        # Its own session: stop() ends the API server and the engine it started together.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.work_dir, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Tinker server exited with code {self.proc.returncode}; "
                                   f"end of {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/v1/healthz", timeout=5) as r:
                    if r.status == 200:
                        return self.base_url
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Tinker server did not answer within {timeout:.0f} s; "
                           f"end of {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # the engine shares the session; make sure nothing is left
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="builtin:tiny-arith")
    parser.add_argument("--work-dir", default=".tinker-server")
    parser.add_argument("--max-runs", type=int, default=4, help="adapters served at once")
    args = parser.parse_args()
    server = LocalTinkerServer(args.work_dir, args.model, args.max_runs, port=args.port)
    print(f"starting SkyRL tx on {server.base_url} (log: {server.log_path}) …", flush=True)
    try:
        server.start()
        print(f"ready: export TINKER_BASE_URL={server.base_url} TINKER_API_KEY=tml-local", flush=True)
        while server.proc and server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
