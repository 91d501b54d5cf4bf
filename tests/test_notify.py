"""Webhook notifications against a local HTTP server on 127.0.0.1: delivery, retries, and
a dead or slow endpoint never blocking the caller."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from retrain_core.notify import Notifier, webhook_problem


class Flaky(BaseHTTPRequestHandler):
    fail_first = 0
    delay_s = 0.0
    received: ClassVar[list[dict]] = []
    calls = 0

    def do_POST(self) -> None:
        Flaky.calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(Flaky.delay_s)
        if Flaky.calls <= Flaky.fail_first:
            self.send_response(503)
            self.end_headers()
            return
        Flaky.received.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    Flaky.fail_first, Flaky.delay_s, Flaky.received, Flaky.calls = 0, 0.0, [], 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    srv.shutdown()
    srv.server_close()


def test_event_reaches_the_server(server) -> None:
    n = Notifier(server, "campaign_x", log=lambda m: None)
    n.send("run_failed", "grpo+none_s1", "RuntimeError: boom", exit_code=3)
    assert n.flush(60)
    [event] = Flaky.received
    assert event["event"] == "run_failed" and event["run"] == "grpo+none_s1"
    assert event["campaign"] == "campaign_x" and event["exit_code"] == 3
    assert event["message"] == "RuntimeError: boom" and isinstance(event["time"], float)


def test_server_errors_are_retried(server) -> None:
    Flaky.fail_first = 2
    logged: list[str] = []
    n = Notifier(server, "c", log=logged.append, backoff_s=0.01)
    n.send("test")
    assert n.flush(60)
    assert Flaky.calls == 3 and len(Flaky.received) == 1 and n.delivered == 1 and not logged


def test_dead_endpoint_does_not_block_and_is_logged() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logged: list[str] = []
    n = Notifier(f"http://127.0.0.1:{port}/hook", "c", log=logged.append, retries=1, backoff_s=0.01)
    t0 = time.monotonic()
    for _ in range(50):
        n.send("test")
    assert time.monotonic() - t0 < 5  # queued, not posted inline (generous for a loaded box)
    assert n.flush(120)
    assert n.failed == 50 and "could not deliver test" in logged[0]


def test_slow_endpoint_times_out(server) -> None:
    Flaky.delay_s = 3.0
    logged: list[str] = []
    n = Notifier(server, "c", log=logged.append, timeout_s=0.3, retries=0)
    n.send("test")
    assert n.flush(60)
    assert n.failed == 1 and "timed out" in logged[0]


def test_disabled_and_url_checks() -> None:
    n = Notifier("", "c")
    n.send("test")  # no webhook: nothing queued, no thread
    assert not n.enabled and n._thread is None
    assert webhook_problem("") is None and webhook_problem("https://hooks.example.com/x") is None
    assert "http:// or https://" in webhook_problem("hooks.example.com")
