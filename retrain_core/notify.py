"""Campaign alerts to a webhook: `[notify] webhook = "https://…"` gets a JSON POST per event
(run failed / stalled / finished, rule fired, campaign ended).

`Notifier.send` only puts the event on a queue; one daemon thread posts it with a timeout and
retries (1 s, 2 s, 4 s backoff), so a slow or dead endpoint never blocks the supervisor.
Events that cannot be delivered are logged and dropped. Body:

    {"event": "run_failed", "campaign": "campaign_…", "run": "grpo+none_s42",
     "message": "…", "time": 1767225600.0, ...event fields}
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

EVENTS = ("run_failed", "run_stalled", "run_succeeded", "rule_fired", "campaign_finished", "test")
QUEUE_MAX = 1000


def webhook_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook ("" means no webhook and is fine)."""
    if url == "":
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f'expected an http:// or https:// URL (or "" for none), found {url!r}'
    return None


def post_json(url: str, body: dict, timeout_s: float) -> None:
    """One POST; raises OSError (URLError, timeouts) or urllib.error.HTTPError."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "retrain-notify/1"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()


class Notifier:
    def __init__(self, webhook: str, campaign: str, log: Callable[[str], None] = print,
                 timeout_s: float = 5.0, retries: int = 3, backoff_s: float = 1.0):
        self.webhook, self.campaign, self.log = webhook, campaign, log
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.webhook)

    def send(self, event: str, run: str | None = None, message: str = "", **fields) -> None:
        """Queue one event; returns at once (never raises, never blocks)."""
        if not self.enabled:
            return
        body = {"event": event, "campaign": self.campaign, "run": run, "message": message,
                "time": time.time(), **fields}
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.log(f"notify: queue full ({QUEUE_MAX} events), dropped {event}")
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._deliver_forever, name="notify", daemon=True)
            self._thread.start()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait (bounded) until every queued event was delivered or given up on."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks

    def _deliver_forever(self) -> None:
        while True:
            body = self._queue.get()
            try:
                self._deliver(body)
            finally:
                self._queue.task_done()

    def _deliver(self, body: dict) -> None:
        for attempt in range(self.retries + 1):
            try:
                post_json(self.webhook, body, self.timeout_s)
                self.delivered += 1
                return
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if 400 <= exc.code < 500 and exc.code != 429:
                    break  # the endpoint rejects it: retrying will not help
            except (OSError, ValueError) as exc:
                error = str(getattr(exc, "reason", exc))
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        self.failed += 1
        self.log(f"notify: could not deliver {body['event']} to {self.webhook}: {error}")
