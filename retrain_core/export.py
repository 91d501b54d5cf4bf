"""`retrain export [DIR|LOGS_DIR] --port P`: a read-only HTTP exporter on 127.0.0.1.

- `GET /metrics`: Prometheus text format (0.0.4): per run its status, step, attempt,
  stalled flag, latest metrics and resource use; per campaign run counts by status, ETA
  and whether its supervisor is alive; per GPU utilisation and memory when NVML answers.
- `GET /v1/runs`: the JSON of `retrain status --json` (the same summaries).

It only reads campaign files (what `retrain status` reads) and listens on the loopback
interface only: nothing here can change a campaign. Also `watch_loop`, the refreshing view
behind `retrain status --watch`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from retrain_core.resources import ResourceSampler, running_runs
from retrain_core.supervisor import api
from retrain_core.supervisor.cli_status import campaign_summary
from retrain_core.supervisor.validate import json_safe

HOST = "127.0.0.1"
RUN_METRICS = {  # metrics.jsonl field -> Prometheus gauge (units in the name, as is the custom)
    "mean_reward": "retrain_run_mean_reward", "correct_rate": "retrain_run_correct_rate",
    "running_correct_rate": "retrain_run_running_correct_rate", "loss": "retrain_run_loss",
    "sepa_lambda": "retrain_run_sepa_lambda", "step_time_s": "retrain_run_step_time_seconds",
    "throttle_wait_s": "retrain_run_throttle_wait_seconds",
}
HELP = {
    "retrain_run_info": "a run of a campaign (value 1); its status is a label",
    "retrain_run_step": "steps done", "retrain_run_max_steps": "steps planned",
    "retrain_run_attempt": "attempt number (1 = first launch)",
    "retrain_run_stalled": "1 when the supervisor flags the run as stalled",
    "retrain_run_rss_bytes": "resident memory of the run's process tree",
    "retrain_run_cpu_percent": "CPU use of the run's process tree (100 = one core)",
    "retrain_run_gpu_memory_bytes": "GPU memory of the run's processes (NVML)",
    "retrain_campaign_runs": "runs by status", "retrain_campaign_eta_seconds": "estimated time left",
    "retrain_supervisor_up": "1 when the campaign's supervisor is alive",
    "retrain_gpu_utilization_percent": "GPU utilisation (NVML)",
    "retrain_gpu_memory_used_bytes": "GPU memory in use (NVML)",
    "retrain_gpu_memory_total_bytes": "GPU memory (NVML)",
    **{name: f"latest {field} of metrics.jsonl" for field, name in RUN_METRICS.items()},
}


def add_arguments(parser) -> None:
    parser.add_argument("target", nargs="?", default="logs",
                        help="a campaign directory, or a logs directory holding campaigns")
    parser.add_argument("--port", type=int, required=True,
                        help="TCP port on 127.0.0.1 (0 = any free port, printed at start)")


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _number(value) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return None


def prometheus_text(summaries: list[dict], resources) -> str:
    samples: dict[str, list[str]] = {}

    def add(name: str, labels: dict, value) -> None:
        text = _number(value)
        if text is not None:
            samples.setdefault(name, []).append(f"{name}{_labels(**labels)} {text}")

    usage = {r.run: r for r in resources.runs} if resources else {}
    for c in summaries:
        camp = c["campaign"]
        add("retrain_supervisor_up", {"campaign": camp}, bool(c["supervisor"]["alive"]))
        for status, n in sorted(c["counts"].items()):
            add("retrain_campaign_runs", {"campaign": camp, "status": status}, n)
        add("retrain_campaign_eta_seconds", {"campaign": camp}, c.get("eta_s"))
        for r in c["runs"]:
            key = {"campaign": camp, "run": r["name"]}
            add("retrain_run_info", {**key, "condition": r.get("condition") or "",
                                     "seed": r.get("seed"), "status": r["status"]}, 1)
            add("retrain_run_step", key, r.get("step") or 0)
            add("retrain_run_max_steps", key, r.get("max_steps"))
            add("retrain_run_attempt", key, r.get("attempt"))
            add("retrain_run_stalled", key, bool(r.get("stalled")))
            for field, name in RUN_METRICS.items():
                add(name, key, r["metrics"].get(field))
            u = usage.get(r["name"]) if r["status"] == "running" else None
            if u is not None:
                add("retrain_run_rss_bytes", key, int(u.rss_mb * 1024 * 1024))
                add("retrain_run_cpu_percent", key, u.cpu_pct)
                if u.gpu_mem_mb is not None:
                    add("retrain_run_gpu_memory_bytes", key, int(u.gpu_mem_mb * 1024 * 1024))
    for g in resources.gpus if resources else []:
        key = {"gpu": g.index, "name": g.name}
        add("retrain_gpu_utilization_percent", key, g.util_pct)
        add("retrain_gpu_memory_used_bytes", key, int(g.mem_used_mb * 1024 * 1024))
        add("retrain_gpu_memory_total_bytes", key, int(g.mem_total_mb * 1024 * 1024))
    out = []
    for name, lines in samples.items():
        out += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} gauge", *lines]
    return "\n".join(out) + "\n"


class Exporter:
    """Reads the campaigns under `target` on each request (cheap: the ends of files)."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.sampler = ResourceSampler()
        self.lock = threading.Lock()  # one sampler: CPU % intervals must not interleave

    def summaries(self) -> list[dict]:
        return [campaign_summary(c) for c in api.find_campaigns(self.target)]

    def metrics(self) -> str:
        summaries = self.summaries()
        pids = {}
        for c in api.find_campaigns(self.target):
            pids.update(running_runs(api.read_state(c)))
        with self.lock:
            resources = self.sampler.sample(pids)
        return prometheus_text(summaries, resources)

    def runs(self) -> str:
        return json.dumps({"campaigns": json_safe(self.summaries())}, indent=1, allow_nan=False)


def make_handler(exporter: Exporter):
    class Handler(BaseHTTPRequestHandler):
        server_version = "retrain-export/1"

        def do_GET(self) -> None:  # http.server's name
            path = self.path.split("?", 1)[0]
            try:
                if path == "/metrics":
                    self._send(200, exporter.metrics(), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/v1/runs":
                    self._send(200, exporter.runs(), "application/json")
                else:
                    self._send(404, "not found: try /metrics or /v1/runs\n", "text/plain")
            except Exception as exc:  # noqa: BLE001 - a bad file must not end the exporter
                self._send(500, f"error reading campaigns: {type(exc).__name__}: {exc}\n", "text/plain")

        def _refuse(self) -> None:
            self._send(405, "read-only: only GET is served\n", "text/plain")

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

        def _send(self, code: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass  # quiet: scrapers call every few seconds

    return Handler


def main(args) -> int:
    target = Path(args.target)
    if not target.exists():
        print(f"retrain export: {target} does not exist", file=sys.stderr)
        return 2
    try:
        server = ThreadingHTTPServer((HOST, args.port), make_handler(Exporter(target)))
    except OSError as exc:
        print(f"retrain export: cannot listen on {HOST}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    port = server.server_address[1]
    # Ctrl-C and SIGTERM both stop it cleanly; SIGINT is re-armed because a process started in
    # the background by a non-interactive shell inherits it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"serving http://{HOST}:{port}/metrics and http://{HOST}:{port}/v1/runs "
          f"for {target} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def watch_loop(args, show, interval: float, count: int = 0) -> int:
    """`retrain status --watch`: run `show(args)` every `interval` seconds. On a terminal
    the screen is redrawn in place; piped, each refresh is printed whole (JSON: one line)."""
    once = copy.copy(args)
    once.watch = None
    tty = sys.stdout.isatty()
    code, done = 0, 0
    try:
        while True:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = show(once)
            text = buf.getvalue()
            if getattr(args, "json", False) and text.strip():
                text = json.dumps(json.loads(text), separators=(",", ":")) + "\n"
            elif tty:
                text = "\x1b[H\x1b[2J" + text + f"\n(every {interval:g} s · Ctrl-C stops)\n"
            else:
                text = f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n{text}"
            sys.stdout.write(text)
            sys.stdout.flush()
            done += 1
            if count and done >= count:
                return code
            time.sleep(interval)
    except KeyboardInterrupt:
        return code
