"""The platform's side in tests: a paho subscriber that verifies with an independent COSE library.

Verification here deliberately does not use `floor.envelope`: `cwt` decodes and checks
every COSE_Sign1, so a bug shared by our signer and our verifier cannot hide.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as paho
from cwt import COSE, COSEKey
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class Message:
    topic: str
    raw: bytes
    decoded: dict[str, Any] | None
    retain: bool
    arrived: float

    @property
    def payload(self) -> dict[str, Any]:
        """The verified payload, or for unverified filler, decoded on first use."""
        if self.decoded is None:
            self.decoded = cbor2.loads(cbor2.loads(self.raw).value[2])
        return self.decoded

    @property
    def key(self) -> tuple[str, int, bytes, int]:
        p = self.payload
        return (p["gw"], p["ep"][0], p["ep"][1], p["seq"])


def independent_verify(raw: bytes, pubkey_pem: bytes, kid: bytes) -> dict[str, Any]:
    """Verify with `cwt`; return the decoded payload map or raise."""
    key = COSEKey.from_pem(pubkey_pem, kid=kid)
    payload = COSE.new().decode(raw, key)
    decoded = cbor2.loads(payload)
    if not isinstance(decoded, dict):
        raise ValueError("payload is not a map")
    return decoded


class Collector:
    """Subscribes with a persistent session and keeps every verified message."""

    def __init__(
        self,
        port: int,
        pubkey: Path,
        *,
        prefix: str = "gridedge/v1",
        unverified_kinds: frozenset[str] = frozenset(),
    ) -> None:
        from floor.envelope import kid_of, load_public_key  # kid only; verification is cwt's

        self.pem = pubkey.read_bytes()
        self.kid = kid_of(load_public_key(self.pem))
        self.messages: list[Message] = []
        self.invalid: list[tuple[str, bytes, str]] = []
        self._lock = threading.Condition()
        self._connected = threading.Event()
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        c.reconnect_delay_set(1, 2)
        self.prefix = prefix
        # Bulk filler a test only counts (a 100,000-message backlog) is decoded without the
        # slow independent verification; everything else is verified with cwt.
        self.unverified_kinds = unverified_kinds
        self.client = c
        self.port = port

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe([(f"{self.prefix}/+/up/#", 1), (f"{self.prefix}/+/status", 1)])
            self._connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        raw = bytes(msg.payload)
        arrived = time.monotonic()
        try:
            payload = None
            if msg.topic.rpartition("/")[2] not in self.unverified_kinds:
                payload = independent_verify(raw, self.pem, self.kid)
        except Exception as exc:  # anything cwt refuses is a verification failure
            with self._lock:
                self.invalid.append((msg.topic, raw, repr(exc)))
                self._lock.notify_all()
            return
        with self._lock:
            self.messages.append(Message(msg.topic, raw, payload, bool(msg.retain), arrived))
            if payload is not None:
                # filler does not wake waiters (wait_for polls): a predicate that scans
                # 100,000 messages on every arrival would make this subscriber the bottleneck
                self._lock.notify_all()

    def start(self) -> Collector:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("collector did not connect")
        # wait for the SUBACK to be processed: a round trip through the broker
        time.sleep(0.1)
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, pred: Callable[[list[Message]], bool], timeout: float = 30.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"condition not met after {timeout} s; have {len(self.messages)} messages"
                    )
                self._lock.wait(min(left, 0.05))
            return list(self.messages)

    def wait_more(self, n: int, timeout: float = 30.0) -> list[Message]:
        """Wait until `n` more outbox messages (seq > 0) than now have arrived."""
        target = len(self.up()) + n
        return self.wait_for(lambda ms: sum(1 for m in ms if m.payload["seq"]) >= target, timeout)

    def up(self, kind: str | None = None) -> list[Message]:
        with self._lock:
            return [
                m
                for m in self.messages
                if m.payload["seq"] != 0 and (kind is None or m.payload["kind"] == kind)
            ]

    def in_seq_order(self, kind: str | None = None) -> list[Message]:
        """Each outbox message once, in seq order: the gateway's own order, as a platform
        that drops resends and sorts by seq reads it (a resend after a reconnect may
        arrive after newer messages; delivery is at least once, not in arrival order)."""
        by_seq = {m.payload["seq"]: m for m in self.up(kind)}
        return [by_seq[s] for s in sorted(by_seq)]

    def seqs(self, kind: str | None = None) -> set[int]:
        return {m.payload["seq"] for m in self.up(kind)}


def assert_no_seq_reused(msgs: list[Message]) -> None:
    """The same seq must always carry the very same signed bytes (a resend), never another message."""
    by_seq: dict[int, set[bytes]] = {}
    for m in msgs:
        if m.payload["seq"]:
            by_seq.setdefault(m.payload["seq"], set()).add(m.raw)
    reused = {s: len(v) for s, v in by_seq.items() if len(v) > 1}
    assert not reused, f"seqs carried different messages: {reused}"


def dropped_seqs(msgs: list[Message], reason: str | None = None) -> set[int]:
    """Every seq an `outbox.dropped` among `msgs` names (of one `reason`, or any)."""
    out: set[int] = set()
    for m in msgs:
        if m.payload["kind"] == "outbox.dropped":
            for rec in m.payload["recs"]:
                if reason is None or rec["d"]["reason"] == reason:
                    for a, b in rec["d"]["ranges"]:
                        out.update(range(a, b + 1))
    return out
