"""The compact signed form of a message, for bearers that count bytes (an SMS carries
140; docs/envelope-and-topics.md, "The compact form").

The same gateway key signs it, as a tagged COSE_Sign1 with the same protected header;
its payload is a CBOR array instead of the envelope's map, with the kinds, time
qualities and the record keys of the life-safety kinds written as small integers:

    [1, gw, ep, seq, kind, src, prio, tq, [[tb, tu, d], ...]]

It names the same message as the MQTT copy (`gw`, `ep`, `seq`), so a platform that
receives both keeps one. Decoding gives back exactly the envelope's payload map; a key
or kind not in the tables below stays text, so nothing is lost when they grow (new
codes are only ever added, never reused).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from floor.errors import EnvelopeError, EnvelopeReason
from floor.kinds import LIFE_SAFETY_KINDS

COMPACT_VERSION = 1

KINDS = LIFE_SAFETY_KINDS  # codes 0..5: the order is part of the form; new kinds only at the end
QUALITIES = ("gnss", "ntp", "rtc", "persisted", "none")
KEYS = (
    "device", "worker", "counter", "uptime_ms", "boot", "authenticated", "fix", "lat", "lon",
    "alt", "sats", "hdop", "speed", "course", "utc", "age_ms", "event", "cancel", "mmsi", "call",
    "nature", "nature_code", "position_enhanced", "utc_hhmm", "relay_of", "ack_of", "format",
    "category", "ack", "folded", "sog", "cog", "heading", "nav_status", "msg_type", "channel",
    "station", "text", "state", "silent_s", "interval_s",
)  # fmt: skip
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
_TQ_CODE = {k: i for i, k in enumerate(QUALITIES)}
_KEY_CODE = {k: i for i, k in enumerate(KEYS)}


def _pack(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {_KEY_CODE.get(k, k): _pack(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_pack(v) for v in d]
    return d


def _unpack(d: Any) -> Any:
    if isinstance(d, dict):
        return {_code(k, KEYS): _unpack(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_unpack(v) for v in d]
    return d


def _code(value: Any, names: tuple[str, ...]) -> Any:
    """A code of the table back to its name; text stays text."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(names):
            raise EnvelopeError(EnvelopeReason.PAYLOAD, f"compact code {value} unknown")
        return names[value]
    return value


def pack(payload: Mapping[str, Any]) -> list[Any]:
    """The envelope's payload map as the compact array."""
    recs = [[r["tb"], r["tu"], _pack(r["d"])] for r in payload["recs"]]
    return [
        COMPACT_VERSION,
        payload["gw"],
        payload["ep"],
        payload["seq"],
        _KIND_CODE.get(payload["kind"], payload["kind"]),
        payload["src"],
        payload["prio"],
        _TQ_CODE.get(payload["tq"], payload["tq"]),
        recs,
    ]


def unpack(compact: Any) -> dict[str, Any]:
    """The envelope's payload map from a compact array (verified already, still checked)."""
    if not isinstance(compact, list) or len(compact) != 9 or compact[0] != COMPACT_VERSION:
        raise EnvelopeError(EnvelopeReason.PAYLOAD, "not a compact form version 1 array")
    _v, gw, ep, seq, kind, src, prio, tq, recs = compact
    if not isinstance(recs, list) or not all(isinstance(r, list) and len(r) == 3 for r in recs):
        raise EnvelopeError(EnvelopeReason.PAYLOAD, "compact records must be [tb, tu, d]")
    return {
        "v": 1,
        "gw": gw,
        "ep": ep,
        "seq": seq,
        "kind": _code(kind, KINDS),
        "src": src,
        "prio": prio,
        "tq": _code(tq, QUALITIES),
        "recs": [{"tb": tb, "tu": tu, "d": _unpack(d)} for tb, tu, d in recs],
    }
