"""What the broker acknowledged, read off the wire between the gateway and the broker.

The gateway's promise ends at the PUBACK: a row leaves the outbox only when the broker
has acknowledged it. A `WireTap` on a `FaultProxy` decodes the MQTT 3.1.1 packets both
ways, pairs each QoS 1 PUBLISH with its PUBACK by packet id, and records the envelope
seq the broker acknowledged, when, and on which connection. A test then holds the
gateway to exactly its promise, whatever the broker does with a message afterwards.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import cbor2

PUBLISH, PUBACK = 3, 4
UP, DOWN = "up", "down"  # gateway -> broker, broker -> gateway


@dataclass
class Ack:
    seq: int
    conn: int  # which proxied connection (one per MQTT session)
    at: float  # time.monotonic() when the PUBACK passed the proxy


def envelope_seq(payload: bytes) -> int | None:
    """The `seq` inside a COSE_Sign1 envelope (no verification: the subscribers do that)."""
    try:
        outer = cbor2.loads(payload)
        body = cbor2.loads(outer.value[2])
    except Exception:  # not an envelope: nothing to record
        return None
    seq = body.get("seq") if isinstance(body, dict) else None
    return seq if isinstance(seq, int) and seq > 0 else None


@dataclass
class _Stream:
    buf: bytearray = field(default_factory=bytearray)

    def packets(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """(type, flags, body) for every whole packet now buffered."""
        self.buf += data
        out: list[tuple[int, int, bytes]] = []
        while True:
            length, mult, i = 0, 1, 1
            while True:
                if i >= len(self.buf):
                    return out
                b = self.buf[i]
                length += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if len(self.buf) < i + length:
                return out
            first = self.buf[0]
            out.append((first >> 4, first & 0x0F, bytes(self.buf[i : i + length])))
            del self.buf[: i + length]


class WireTap:
    """Fed by `FaultProxy` with every chunk it forwards; thread-safe to read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[tuple[int, str], _Stream] = {}
        self._pending: dict[tuple[int, int], int] = {}  # (conn, packet id) -> seq
        self.acks: list[Ack] = []

    def feed(self, conn: int, direction: str, data: bytes) -> None:
        with self._lock:
            stream = self._streams.setdefault((conn, direction), _Stream())
            for kind, flags, body in stream.packets(data):
                if direction == UP and kind == PUBLISH and (flags >> 1) & 3 == 1:
                    topic_len = int.from_bytes(body[:2], "big")
                    mid = int.from_bytes(body[2 + topic_len : 4 + topic_len], "big")
                    seq = envelope_seq(body[4 + topic_len :])
                    if seq is not None:
                        self._pending[(conn, mid)] = seq
                elif direction == DOWN and kind == PUBACK:
                    seq = self._pending.pop((conn, int.from_bytes(body[:2], "big")), None)
                    if seq is not None:
                        self.acks.append(Ack(seq, conn, time.monotonic()))

    def acked(self) -> set[int]:
        with self._lock:
            return {a.seq for a in self.acks}

    def acked_between(self, start: float, end: float) -> set[int]:
        with self._lock:
            return {a.seq for a in self.acks if start <= a.at <= end}
