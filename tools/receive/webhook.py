"""Life-safety rows handed on at once: each is POSTed as JSON to the platform's webhook
after its row is committed, signed with HMAC-SHA256 of the body (`X-Gridedge-Signature:
sha256=HEX`) when a secret is set. A post that fails is tried again, with a growing
wait, until the webhook takes it; the waiting ones are bounded, and the rows stay in the
store (and were announced by NOTIFY) whatever the webhook does."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

MAX_WAITING = 10_000
TIMEOUT_S = 5.0
RETRY_MAX_S = 30.0


def _jsonable(o: object) -> object:
    return o.hex() if isinstance(o, bytes) else str(o)


class Webhook:
    def __init__(self, url: str, secret: bytes | None = None) -> None:
        self.url = url
        self.secret = secret
        self.results: Counter[str] = Counter()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._run, name="receive.webhook", daemon=True).start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def post(self, note: dict[str, Any]) -> None:
        if self._queue.qsize() >= MAX_WAITING:
            self.results["dropped"] += 1  # the row is stored and was announced; only this push is lost
            return
        self._queue.put(note)

    def _run(self) -> None:
        while True:
            note = self._queue.get()
            body = json.dumps(note, default=_jsonable).encode()
            wait = 0.5
            while not self._send(body):
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX_S)

    def _send(self, body: bytes) -> bool:
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers["X-Gridedge-Signature"] = (
                "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            )
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                ok = bool(200 <= resp.status < 300)
        except (OSError, urllib.error.URLError) as exc:
            log.warning("receive: the webhook did not take a life-safety post: %s", exc)
            ok = False
        self.results["ok" if ok else "failed"] += 1
        return ok
