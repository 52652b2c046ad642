"""`gridedge verify`: subscribe like the platform would, verify every message, count gaps."""

from __future__ import annotations

import asyncio
import bisect
import json
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.modem.pdu import Reassembly
from edge.mqtt import MqttConnection, TlsSettings
from floor import compact
from floor.config import valid_id
from floor.envelope import check_gateway_payload, keyring, load_public_key, verify
from floor.errors import CANNOT_LOAD, N_, ConfigError, EdgeError, EnvelopeError
from floor.messages import Incoming
from tools.redate import Redater


def missing_seqs(seqs: Iterable[int], lo: int | None = None, hi: int | None = None) -> list[int]:
    """Seqs absent from the closed range [lo or min, hi or max]."""
    have = set(seqs)
    if not have and hi is None:
        return []
    start = min(have) if lo is None else lo
    end = max(have) if hi is None else hi
    return [s for s in range(start, end + 1) if s not in have]


def load_keys(specs: list[str]) -> tuple[dict[bytes, Ed25519PublicKey], dict[bytes, str]]:
    """`GW=PATH` (the key speaks for gateway GW only) or, when it is the only key, `PATH`.
    The keyring, and each key's gateway."""
    keys: dict[bytes, Ed25519PublicKey] = {}
    gateways: dict[bytes, str] = {}
    for spec in specs:
        gw, sep, path = spec.partition("=")
        if not (sep and valid_id(gw)):
            gw, path = "", spec
        if not gw and len(specs) > 1:
            raise ConfigError(
                "--pubkey", N_("{spec}: with several keys, bind each to its gateway: GW=PATH"), spec=spec
            )
        try:
            key = load_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError("--pubkey", CANNOT_LOAD, file_path=path, why=exc) from None
        kid = next(iter(keyring(key)))
        keys[kid] = key
        if gw:
            gateways[kid] = gw
    return keys, gateways


def _dropped_ranges(payload: dict[str, Any]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for rec in payload.get("recs", []):
        d = rec.get("d", {}) if isinstance(rec, dict) else {}
        for r in d.get("ranges", []) if isinstance(d, dict) else []:
            if isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r):
                out.append((r[0], r[1]))
    return out


def _merged(ranges: Iterable[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The ranges clipped to [lo, hi], sorted and merged."""
    out: list[tuple[int, int]] = []
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in ranges if b >= lo and a <= hi and a <= b):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def covered(ranges: Iterable[tuple[int, int]], lo: int, hi: int) -> int:
    """How many seqs of [lo, hi] the ranges cover."""
    return sum(b - a + 1 for a, b in _merged(ranges, lo, hi))


def gaps(
    have: set[int], lo: int, hi: int, reported: Iterable[tuple[int, int]], limit: int = 100
) -> tuple[int, list[int]]:
    """How many seqs of [lo, hi] are neither received nor reported dropped, and the first
    `limit` of them, by arithmetic and by walking only what was received."""
    if hi < lo:
        return 0, []
    merged = _merged(reported, lo, hi)
    inside = sorted(x for x in have if lo <= x <= hi)
    starts = [a for a, _ in merged]

    def is_reported(x: int) -> bool:
        i = bisect.bisect_right(starts, x) - 1
        return i >= 0 and merged[i][1] >= x

    both = sum(1 for x in inside if is_reported(x))
    count = (hi - lo + 1) - len(inside) - sum(b - a + 1 for a, b in merged) + both
    first: list[int] = []
    received = set(inside)
    x, i = lo, 0
    while x <= hi and len(first) < limit:  # each step passes a received seq or a range
        while i < len(merged) and merged[i][1] < x:
            i += 1
        if i < len(merged) and merged[i][0] <= x:
            x = merged[i][1] + 1
            continue
        if x not in received:
            first.append(x)
        x += 1
    return count, first


@dataclass(frozen=True, slots=True)
class Checked:
    """What the checks made of one message: its payload (None when refused), the key
    that signed it, why it fails (empty when it does not), and whether it is junk (signed
    by a trusted key but no message a consumer can take: held against that key's gateway)."""

    payload: dict[str, Any] | None
    kid: bytes | None
    error: str = ""
    junk: bool = False


def check_message(
    topic: str,
    data: bytes,
    keys: Mapping[bytes, Ed25519PublicKey],
    gateways: Mapping[bytes, str],
    prefix: str = "gridedge/v1",
) -> Checked:
    """The platform's checks of one MQTT message (gridedge verify and gridedge receive
    both make them): the signature by a trusted key, the payload's shape, the key bound to
    the gateway it speaks for (`gateways`: kid -> gw), the topic exactly its own."""
    try:
        verified = verify(data, keys)
    except EnvelopeError as exc:
        return Checked(None, None, exc.reason.value)
    try:
        p = check_gateway_payload(verified.payload)
    except EnvelopeError as exc:
        return Checked(None, verified.kid, exc.reason.value, junk=True)
    status = p["kind"] == "gateway.status"
    expected = f"{prefix}/{p['gw']}/status" if status else f"{prefix}/{p['gw']}/up/{p['kind']}"
    bound = gateways.get(verified.kid)
    if bound is not None and bound != p["gw"]:  # a gateway's key speaks only for that gateway
        return Checked(p, verified.kid, "key_not_for_gateway")
    return Checked(p, verified.kid, "" if topic == expected else "topic_mismatch")


def check_compact(
    data: bytes, keys: Mapping[bytes, Ed25519PublicKey], gateways: Mapping[bytes, str]
) -> Checked:
    """The same checks of a message in its compact signed form (an SMS or BeiDou copy)."""
    try:
        verified = verify(data, keys)
    except EnvelopeError as exc:
        return Checked(None, None, exc.reason.value)
    try:
        p = check_gateway_payload(compact.unpack(verified.payload))
    except EnvelopeError as exc:
        return Checked(None, verified.kid, exc.reason.value, junk=True)
    bound = gateways.get(verified.kid)
    if bound is not None and bound != p["gw"]:
        return Checked(p, verified.kid, "key_not_for_gateway")
    return Checked(p, verified.kid)


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
    dropped: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    prefix: str = "gridedge/v1"
    gateways: dict[bytes, str] = field(default_factory=dict)  # kid -> the gateway it may sign for
    redater: Redater = field(default_factory=Redater)
    late: list[dict[str, Any]] = field(default_factory=list)  # lines re-dated by an anchor just in
    junk: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # gw -> its signed junk

    def add(self, topic: str, payload_bytes: bytes, keys: dict[bytes, Ed25519PublicKey]) -> dict[str, Any]:
        return self._take(check_message(topic, payload_bytes, keys, self.gateways, self.prefix), topic)

    def add_compact(self, data: bytes, keys: dict[bytes, Ed25519PublicKey]) -> dict[str, Any]:
        """A message in its compact signed form, as a second bearer (SMS) carried it: the
        same checks, and the same (gw, ep, seq) as its MQTT copy (a duplicate of it)."""
        return self._take(check_compact(data, keys, self.gateways), "sms")

    def _take(self, c: Checked, topic: str) -> dict[str, Any]:
        if c.payload is None:
            self.invalid += 1
            self.reasons[c.error] += 1
            line: dict[str, Any] = {"topic": topic, "ok": False, "error": c.error}
            if c.junk:
                who = (
                    self.gateways.get(c.kid or b"") or topic.removeprefix(f"{self.prefix}/").partition("/")[0]
                )
                self.junk[who or "?"] += 1
                line["gw"] = who or "?"
            return line
        line = self._line(c.payload, topic) | ({"bearer": "sms"} if topic == "sms" else {})
        if c.error:
            return self._invalid(line, c.error)
        return self._count(c.payload, line)

    @staticmethod
    def _line(p: dict[str, Any], topic: str) -> dict[str, Any]:
        ep = p["ep"]
        return {
            "topic": topic,
            "gw": p["gw"],
            "ep": [ep[0], ep[1].hex()],
            "seq": p["seq"],
            "kind": p["kind"],
            "src": p["src"],
            "recs": p["recs"],
            "ok": True,
        }

    def _count(self, p: dict[str, Any], line: dict[str, Any]) -> dict[str, Any]:
        gw, ep, seq = p["gw"], p["ep"], p["seq"]
        key = (gw, ep[0], ep[1], seq)
        if p["kind"] != "gateway.status" and key in self.seen:
            self.duplicates += 1  # a redelivery (or the other bearer's copy): counted once, as valid
            return line | {"duplicate": True}
        self.valid += 1
        epoch = (gw, ep[0], ep[1])
        if p["kind"] in ("gateway.status", "time.anchor"):
            self.late.extend(self.redater.learn(epoch, p["kind"], p["recs"]))
        self.redater.redate(epoch, line, p["tq"])
        if p["kind"] == "gateway.status":
            recs = p["recs"]
            d = recs[0].get("d", {}) if recs and isinstance(recs[0], dict) else {}
            if isinstance(d, dict) and isinstance(d.get("hw"), int):
                self.hw[gw] = max(self.hw.get(gw, 0), d["hw"])
            return line
        self.seen.add(key)
        self.seqs[gw][(ep[0], ep[1])].add(seq)
        if p["kind"] == "outbox.dropped":
            self.dropped[gw].extend(_dropped_ranges(p))
        return line

    def _invalid(self, line: dict[str, Any], reason: str) -> dict[str, Any]:
        self.invalid += 1
        self.reasons[reason] += 1
        return {**line, "ok": False, "error": reason}

    def summary(self) -> dict[str, Any]:
        """Every loop here runs over what was received, never over a range a message claims
        (a signed `hw` or drop range of 2**62 is just two numbers)."""
        gateways: dict[str, Any] = {}
        for gw, eps in self.seqs.items():
            all_seqs: set[int] = set().union(*eps.values()) if eps else set()
            reported = self.dropped.get(gw, [])
            lo, hi = min(all_seqs), max(all_seqs | {self.hw.get(gw, 0)})
            count, first = gaps(all_seqs, lo, hi, reported)
            gateways[gw] = {
                "epochs": {
                    f"{c}:{n.hex()}": {
                        "count": len(s),
                        "first": min(s),
                        "last": max(s),
                        "missing": max(s) - min(s) + 1 - len(s),
                    }
                    for (c, n), s in sorted(eps.items())
                },
                "messages": len(all_seqs),
                "missing": count,
                "missing_seqs": first,
                "dropped_reported": covered(reported, lo, hi),
                "hw": self.hw.get(gw),
            }
        return {
            "summary": True,
            "valid": self.valid,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "missing": sum(g["missing"] for g in gateways.values()),
            "invalid_reasons": dict(self.reasons),
            "junk_by_gateway": dict(self.junk),
            "gateways": gateways,
        }


async def run_verify(
    *,
    host: str,
    port: int,
    pubkeys: list[str],
    prefix: str,
    count: int | None,
    timeout: float | None,
    until_idle: float | None = None,
    client_id: str | None = None,
    tls: TlsSettings | None = None,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Verify until `count` messages, `timeout` seconds, or `until_idle` seconds of quiet.

    With a `client_id` the subscription is a persistent session that survives broker
    restarts (the verifier reconnects), so nothing published meanwhile is missed.
    """
    keys, gateways = load_keys(pubkeys)
    tally = Tally(prefix=prefix, gateways=gateways)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    counted = 0
    last = loop.time()

    def on_message(msg: Incoming) -> None:
        nonlocal counted, last
        try:
            line = tally.add(msg.topic, msg.payload, keys)
            text = json.dumps(line, default=_jsonable)
        except Exception as exc:  # one message must never stop the verifier for the fleet
            tally.invalid += 1
            tally.reasons["unprintable"] += 1
            text = json.dumps(
                {"topic": msg.topic, "ok": False, "error": "unprintable", "detail": type(exc).__name__}
            )
        out.write(text + "\n")
        for late in tally.late:  # records an anchor that just arrived re-dates
            out.write(json.dumps(late, default=_jsonable) + "\n")
        tally.late.clear()
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
        await _sessions(
            host, port, prefix=prefix, client_id=client_id, on_message=on_message, done=done, tls=tls
        )

    await _until_done(done, session_loop(), idle_watch(), timeout=timeout)
    summary = tally.summary()
    out.write(json.dumps(summary, default=_jsonable) + "\n")
    out.flush()
    return summary


async def _until_done(
    done: asyncio.Event,
    sessions_coro: Coroutine[Any, Any, None],
    watch_coro: Coroutine[Any, Any, None],
    *,
    timeout: float | None,
) -> None:
    """Run the sessions and the idle watch until `done`, the timeout, or the sessions fail
    (raised here); everything started is cancelled and awaited before returning."""
    watcher = asyncio.ensure_future(watch_coro)
    sessions = asyncio.ensure_future(sessions_coro)
    waiter = asyncio.ensure_future(done.wait())
    try:
        await asyncio.wait((waiter, sessions), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if sessions.done() and not sessions.cancelled() and sessions.exception() is not None:
            raise sessions.exception()  # type: ignore[misc]
    finally:
        for t in (watcher, sessions, waiter):
            t.cancel()
        await asyncio.gather(watcher, sessions, waiter, return_exceptions=True)


async def _sessions(
    host: str,
    port: int,
    *,
    prefix: str,
    client_id: str | None,
    on_message: Callable[[Incoming], None],
    done: asyncio.Event,
    tls: TlsSettings | None,
) -> None:
    """Subscribe until `done`; with a client id, a persistent session, reconnected."""
    persistent = client_id is not None
    cid = client_id or f"gridedge-verify-{uuid.uuid4().hex[:8]}"
    while not done.is_set():
        try:
            async with MqttConnection(
                host=host,
                port=port,
                client_id=cid,
                clean_session=not persistent,
                on_message=on_message,
                tls=tls,
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


def verify_sms(lines: Iterable[str], *, pubkeys: list[str], out: TextIO = sys.stdout) -> dict[str, Any]:
    """Verify messages another bearer carried as SMS, from what an SMS gateway hands
    over: one line per SMS, `SENDER HEX` (or the hex alone, one unknown sender), HEX the
    user data, concatenation header included. Parts are put back together in any order,
    keyed by sender, reference and count (two gateways' colliding references never mix; a
    part heard twice counts once); each message is checked as an MQTT one is, and printed
    with `"bearer": "sms"`."""
    keys, gateways = load_keys(pubkeys)
    tally = Tally(gateways=gateways)
    parts = Reassembly()
    bad = 0
    for n, raw in enumerate(lines, 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        sender, text = (fields[0], fields[-1]) if len(fields) > 1 else ("", fields[0])
        try:
            ud = bytes.fromhex(text)
        except ValueError:
            bad += 1
            out.write(json.dumps({"line": n, "ok": False, "error": "not_hex"}) + "\n")
            continue
        whole = parts.feed(sender, ud, now=float(n))
        if whole is not None:
            out.write(json.dumps(tally.add_compact(whole, keys), default=_jsonable) + "\n")
    if parts.waiting:
        bad += parts.waiting
        out.write(json.dumps({"ok": False, "error": "incomplete", "messages": parts.waiting}) + "\n")
    summary = tally.summary()
    summary["invalid"] += bad
    summary["sms_duplicate_parts"] = parts.duplicates
    out.write(json.dumps(summary, default=_jsonable) + "\n")
    return summary
