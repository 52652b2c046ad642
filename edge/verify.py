"""`gridedge verify`: subscribe like the platform would, verify every message, count gaps."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.base.envelope import check_gateway_payload, keyring, load_public_key, verify
from edge.base.errors import EdgeError, EnvelopeError
from edge.base.messages import Incoming
from edge.mqtt import MqttConnection


def missing_seqs(seqs: Iterable[int], lo: int | None = None, hi: int | None = None) -> list[int]:
    """Seqs absent from the closed range [lo or min, hi or max]."""
    have = set(seqs)
    if not have and hi is None:
        return []
    start = min(have) if lo is None else lo
    end = max(have) if hi is None else hi
    return [s for s in range(start, end + 1) if s not in have]


def _dropped_ranges(payload: dict[str, Any]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for rec in payload.get("recs", []):
        d = rec.get("d", {}) if isinstance(rec, dict) else {}
        for r in d.get("ranges", []) if isinstance(d, dict) else []:
            if isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r):
                out.append((r[0], r[1]))
    return out


@dataclass
class Tally:
    """What the verifier has seen, per gateway."""

    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    seen: set[tuple[str, int, bytes, int]] = field(default_factory=set)
    seqs: dict[str, dict[tuple[int, bytes], set[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    hw: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, topic: str, payload_bytes: bytes, keys: dict[bytes, Ed25519PublicKey]) -> dict[str, Any]:
        try:
            p = check_gateway_payload(verify(payload_bytes, keys).payload)
        except EnvelopeError as exc:
            self.invalid += 1
            self.reasons[exc.reason.value] += 1
            return {"topic": topic, "ok": False, "error": exc.reason.value}
        gw, ep, seq = p["gw"], p["ep"], p["seq"]
        line: dict[str, Any] = {
            "topic": topic,
            "gw": gw,
            "ep": [ep[0], ep[1].hex()],
            "seq": seq,
            "kind": p["kind"],
            "src": p["src"],
            "recs": p["recs"],
            "ok": True,
        }
        if f"/{gw}/" not in f"/{topic}/":
            self.invalid += 1
            self.reasons["topic_mismatch"] += 1
            return {**line, "ok": False, "error": "topic_mismatch"}
        self.valid += 1
        if p["kind"] == "gateway.status":
            recs = p["recs"]
            d = recs[0].get("d", {}) if recs and isinstance(recs[0], dict) else {}
            if isinstance(d, dict) and isinstance(d.get("hw"), int):
                self.hw[gw] = max(self.hw.get(gw, 0), d["hw"])
            return line
        key = (gw, ep[0], ep[1], seq)
        if key in self.seen:
            self.duplicates += 1
            line["duplicate"] = True
        self.seen.add(key)
        self.seqs[gw][(ep[0], ep[1])].add(seq)
        if p["kind"] == "outbox.dropped":
            for lo, hi in _dropped_ranges(p):
                self.dropped[gw].update(range(lo, hi + 1))
        return line

    def summary(self) -> dict[str, Any]:
        gateways: dict[str, Any] = {}
        for gw, eps in self.seqs.items():
            all_seqs: set[int] = set().union(*eps.values()) if eps else set()
            reported = self.dropped.get(gw, set())
            gaps = [
                s
                for s in missing_seqs(all_seqs, hi=max(all_seqs | {self.hw.get(gw, 0)}))
                if s not in reported
            ]
            gateways[gw] = {
                "epochs": {
                    f"{c}:{n.hex()}": {
                        "count": len(s),
                        "first": min(s),
                        "last": max(s),
                        "missing": len(missing_seqs(s)),
                    }
                    for (c, n), s in sorted(eps.items())
                },
                "messages": len(all_seqs),
                "missing": len(gaps),
                "missing_seqs": gaps[:100],
                "dropped_reported": len(reported),
                "hw": self.hw.get(gw),
            }
        return {
            "summary": True,
            "valid": self.valid,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "missing": sum(g["missing"] for g in gateways.values()),
            "invalid_reasons": dict(self.reasons),
            "gateways": gateways,
        }


async def run_verify(
    *,
    host: str,
    port: int,
    pubkeys: list[Path],
    prefix: str,
    count: int | None,
    timeout: float | None,
    until_idle: float | None = None,
    client_id: str | None = None,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Verify until `count` messages, `timeout` seconds, or `until_idle` seconds of quiet.

    With a `client_id` the subscription is a persistent session that survives broker
    restarts (the verifier reconnects), so nothing published meanwhile is missed.
    """
    keys = keyring(*(load_public_key(p.read_bytes()) for p in pubkeys))
    tally = Tally()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    counted = 0
    last = loop.time()

    def on_message(msg: Incoming) -> None:
        nonlocal counted, last
        line = tally.add(msg.topic, msg.payload, keys)
        out.write(json.dumps(line, default=_jsonable) + "\n")
        out.flush()
        counted += 1
        last = loop.time()
        if count is not None and counted >= count:
            done.set()

    async def idle_watch() -> None:
        while until_idle is not None:
            await asyncio.sleep(min(until_idle, 0.25))
            if counted and loop.time() - last >= until_idle:
                done.set()
                return

    async def session_loop() -> None:
        await _sessions(host, port, prefix=prefix, client_id=client_id, on_message=on_message, done=done)

    watcher = asyncio.ensure_future(idle_watch())
    sessions = asyncio.ensure_future(session_loop())
    waiter = asyncio.ensure_future(done.wait())
    try:
        await asyncio.wait((waiter, sessions), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if sessions.done() and not sessions.cancelled() and sessions.exception() is not None:
            raise sessions.exception()  # type: ignore[misc]
    finally:
        for t in (watcher, sessions, waiter):
            t.cancel()
        await asyncio.gather(watcher, sessions, waiter, return_exceptions=True)
    summary = tally.summary()
    out.write(json.dumps(summary, default=_jsonable) + "\n")
    out.flush()
    return summary


async def _sessions(
    host: str,
    port: int,
    *,
    prefix: str,
    client_id: str | None,
    on_message: Callable[[Incoming], None],
    done: asyncio.Event,
) -> None:
    """Subscribe until `done`; with a client id, a persistent session, reconnected."""
    persistent = client_id is not None
    cid = client_id or f"gridedge-verify-{uuid.uuid4().hex[:8]}"
    while not done.is_set():
        try:
            async with MqttConnection(
                host=host, port=port, client_id=cid, clean_session=not persistent, on_message=on_message
            ) as conn:
                await conn.subscribe([f"{prefix}/+/up/#", f"{prefix}/+/status"])
                await conn.closed
        except EdgeError as exc:
            if not persistent:
                raise
            print(f"gridedge verify: {exc}; reconnecting", file=sys.stderr)
        if not persistent:
            return
        await asyncio.sleep(0.2)


def _jsonable(o: object) -> object:
    if isinstance(o, bytes):
        return o.hex()
    return str(o)
