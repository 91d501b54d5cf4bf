"""The vLLM engine's process management, without vLLM: a stand-in `vllm` executable.

Start-up failure is a clear error with the log's tail; a missing command names where it
was looked for; the server dies with the trainer even when the trainer is SIGKILLed
(PR_SET_PDEATHSIG), and never listens beyond 127.0.0.1. The real vLLM runs in
test_vllm_real.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from waits import wait_until

from retrain_core.config import ConfigError, load_campaign_text
from retrain_core.train.vllm_engine import VllmError, VllmServer, lora_rank_slot, resolve_command

REPO = Path(__file__).resolve().parents[1]

# Answers /health like `vllm serve` and records the arguments it was started with.
FAKE_SERVER = textwrap.dedent("""\
    #!{python}
    import http.server, json, os, sys
    args = sys.argv[1:]
    open(os.environ["FAKE_ARGS_FILE"], "w").write(json.dumps({{"args": args, "pid": os.getpid(),
        "key": os.environ.get("VLLM_API_KEY"), "lora": os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING")}}))
    if os.environ.get("FAKE_FAIL"):
        print("loading model ...")
        print("ValueError: fake start-up failure: model not found")
        sys.exit(3)
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def do_POST(self):  # LoRA loads succeed; a completion hangs (a long sample)
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/completions":
                open(os.environ["FAKE_ARGS_FILE"] + ".sampling", "w").close()
                import time; time.sleep(600)
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a): pass
    port = int(args[args.index("--port") + 1])
    http.server.HTTPServer((args[args.index("--host") + 1], port), Health).serve_forever()
    """)


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "bin" / "vllm"
    path.parent.mkdir()
    path.write_text(FAKE_SERVER.format(python=sys.executable))
    path.chmod(0o755)
    monkeypatch.setenv("FAKE_ARGS_FILE", str(tmp_path / "args.json"))
    return path


def make_server(command: Path, run_dir: Path, on_gpu: bool = False, **kw) -> VllmServer:
    return VllmServer("some/model", run_dir, lora_rank=4, dtype="float32", on_gpu=on_gpu,
                      command=str(command), start_timeout_s=120, **kw)


def test_server_starts_on_loopback_with_a_key_lora_and_cpu_memory(fake_vllm, tmp_path):
    server = make_server(fake_vllm, tmp_path / "run").start()
    try:
        seen = json.loads((tmp_path / "args.json").read_text())
        args = seen["args"]
        assert args[:2] == ["serve", "some/model"]
        assert args[args.index("--host") + 1] == "127.0.0.1"
        assert int(args[args.index("--port") + 1]) == server.port
        assert seen["key"] == server.api_key and len(server.api_key) >= 24
        assert seen["lora"] == "True" and "--enable-lora" in args
        assert args[args.index("--max-lora-rank") + 1] == "8"  # vLLM's smallest slot that holds 4
        assert args[args.index("--logprobs-mode") + 1] == "processed_logprobs"
        assert "--kv-cache-memory-bytes" in args and "--gpu-memory-utilization" not in args
        assert server.api_key not in (tmp_path / "run" / "vllm.log").read_text()  # key not logged
    finally:
        server.close()
    assert not psutil.pid_exists(seen["pid"]) or psutil.Process(seen["pid"]).status() == psutil.STATUS_ZOMBIE


def test_memory_share_on_gpu_and_explicit(fake_vllm, tmp_path):
    def share(**kw):
        args = make_server(fake_vllm, tmp_path, **kw).args  # not started: only the command line
        return args[args.index("--gpu-memory-utilization") + 1] if "--gpu-memory-utilization" in args else None
    assert share(on_gpu=True) == "0.35"
    assert share(on_gpu=True, memory_share=0.6) == "0.6"
    assert share(memory_share=0.1) == "0.1"  # on CPU too, when asked


def test_lora_rank_slots():
    assert lora_rank_slot(1) == 8 and lora_rank_slot(32) == 32 and lora_rank_slot(33) == 64
    with pytest.raises(VllmError, match="up to 512"):
        lora_rank_slot(1024)


def test_start_up_failure_is_a_clear_error_with_the_log_tail(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(VllmError) as info:
        make_server(fake_vllm, tmp_path / "run").start()
    message = str(info.value)
    assert "exited with code 3 while starting" in message
    assert "fake start-up failure: model not found" in message  # the log's tail
    assert str(tmp_path / "run" / "vllm.log") in message


def test_missing_command_names_where_it_looked(tmp_path):
    with pytest.raises(VllmError) as info:
        resolve_command("no-such-dir/vllm", cwd=tmp_path)
    assert "make vllm" in str(info.value) and str(tmp_path / "no-such-dir" / "vllm") in str(info.value)
    with pytest.raises(VllmError, match="not found on PATH"):
        resolve_command("no-such-vllm-anywhere")


def test_engine_typo_is_located_in_the_config():
    with pytest.raises(ConfigError) as info:
        load_campaign_text('[inference]\nengine = "vllmm"\n', "bad.toml")
    problem = next(p for p in info.value.problems if p.key == "inference.engine")
    assert problem.line == 2 and '"vllm"' in problem.message


TRAINER = textwrap.dedent("""\
    import json, sys, time
    from pathlib import Path
    from retrain_core.train.vllm_engine import VllmServer
    server = VllmServer("m", Path(sys.argv[2]), lora_rank=8, dtype="float32", on_gpu=False,
                        command=sys.argv[1], start_timeout_s=120).start()
    Path(sys.argv[3]).write_text(json.dumps({"server": server.process.pid}))
    time.sleep(600)
    """)


@pytest.mark.timeout(300)
def test_sigkill_of_the_trainer_takes_the_server_with_it(fake_vllm, tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    ready = tmp_path / "ready.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    trainer = subprocess.Popen([sys.executable, str(script), str(fake_vllm), str(tmp_path / "run"), str(ready)],
                               env=env)
    try:
        wait_until(ready.exists, 60, what="the stand-in server up")
        server = psutil.Process(json.loads(ready.read_text())["server"])
        assert server.ppid() == trainer.pid
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        wait_until(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, 30,
                   what="the server to die with its trainer")
    finally:
        trainer.kill()


def test_campaign_with_vllm_but_no_vllm_is_refused_at_launch(tmp_path):
    from retrain_core.config import launch_problems, load_campaign

    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nmodel = "builtin:tiny-arith"\n[data]\nsource = "arithmetic"\n'
                   '[inference]\nengine = "vllm"\nvllm_command = "missing/bin/vllm"\n')
    problems = [p for p in launch_problems(load_campaign(cfg)) if p.key == "inference.engine"]
    assert problems and "cannot run here" in problems[0].message and "make vllm" in problems[0].message


RUN_TOML = textwrap.dedent("""\
    [backend]
    devices = "cpu"
    [model]
    model = "builtin:tiny-arith"
    lora_rank = 4
    [inference]
    engine = "vllm"
    vllm_command = "{command}"
    [training]
    max_steps = 1
    batch_size = 1
    group_size = 2
    max_tokens = 4
    [data]
    source = "arithmetic"
    """)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_retrain_run_reports_a_failed_engine_start_without_traceback(fake_vllm, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(RUN_TOML.format(command=fake_vllm))
    env = dict(os.environ, FAKE_FAIL="1", PYTHONPATH=str(REPO))
    env.pop("RETRAIN_RUN_ID", None)
    res = subprocess.run([sys.executable, "-m", "retrain_core.cli", "run", str(cfg), "--run-dir",
                          str(tmp_path / "out")], check=False, env=env, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 1, res.stderr
    assert "retrain run: vLLM server exited with code 3 while starting" in res.stderr
    assert "fake start-up failure: model not found" in res.stderr
    assert "Traceback" not in res.stderr
    assert (tmp_path / "out" / "vllm.log").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stop_signal_to_the_run_group_mid_sample_is_a_clean_stop(fake_vllm, tmp_path):
    """SIGTERM to the run's process group (what the supervisor sends) also ends the server
    in the middle of a request: the failed sample is the stop, exit 75, no traceback."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(RUN_TOML.format(command=fake_vllm))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("RETRAIN_RUN_ID", None)
    trainer = subprocess.Popen([sys.executable, "-m", "retrain_core.cli", "run", str(cfg), "--run-dir",
                                str(tmp_path / "out")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until((tmp_path / "args.json.sampling").exists, 60, what="a sample in flight")
        os.killpg(trainer.pid, signal.SIGTERM)
        out, err = trainer.communicate(timeout=120)
    finally:
        trainer.kill()
    assert trainer.returncode == 75, err
    assert "Traceback" not in err and "before step 0 finished" in out


@pytest.mark.parametrize("engine,shown", [("vllm", True), ("hf", False)])
def test_plan_panel_names_a_non_default_engine(tmp_path, engine, shown):
    from retrain_core.config import load_campaign
    from retrain_core.plan import estimate
    from retrain_tui.widgets.plan_panel import plan_text

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[campaign]\nseeds = [1]\n[inference]\nengine = "{engine}"\n')
    camp = load_campaign(cfg)
    panel = plan_text(camp, estimate(camp, step_time_s=1.0).to_dict())
    assert ("engine           vllm (a server per run)" in panel) is shown
    assert "engine           hf" not in panel
