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

import cbor2

from floor import cbor_guard
from floor.errors import EnvelopeError, EnvelopeReason

COMPACT_VERSION = 1

# The wire numbers. Each is fixed for ever: a code is only ever added (the next unused
# number), never renumbered or reused, whatever order kinds or keys are listed in
# elsewhere (tests/unit/test_compact.py holds every number as it is on the wire).
KIND_CODES = {
    "sos.alarm": 0,
    "sos.cancel": 1,
    "dsc.distress": 2,
    "ais.distress": 3,
    "worker.down": 4,
    "worker.overdue": 5,
    "beidou.distress": 6,
}
QUALITY_CODES = {"gnss": 0, "ntp": 1, "rtc": 2, "persisted": 3, "none": 4}
KEY_CODES = {
    "device": 0,
    "worker": 1,
    "counter": 2,
    "uptime_ms": 3,
    "boot": 4,
    "authenticated": 5,
    "fix": 6,
    "lat": 7,
    "lon": 8,
    "alt": 9,
    "sats": 10,
    "hdop": 11,
    "speed": 12,
    "course": 13,
    "utc": 14,
    "age_ms": 15,
    "event": 16,
    "cancel": 17,
    "mmsi": 18,
    "call": 19,
    "nature": 20,
    "nature_code": 21,
    "position_enhanced": 22,
    "utc_hhmm": 23,
    "relay_of": 24,
    "ack_of": 25,
    "format": 26,
    "category": 27,
    "ack": 28,
    "folded": 29,
    "sog": 30,
    "cog": 31,
    "heading": 32,
    "nav_status": 33,
    "msg_type": 34,
    "channel": 35,
    "station": 36,
    "text": 37,
    "state": 38,
    "silent_s": 39,
    "interval_s": 40,
    "card": 41,
}

_KIND_NAME = {v: k for k, v in KIND_CODES.items()}
_TQ_NAME = {v: k for k, v in QUALITY_CODES.items()}
_KEY_NAME = {v: k for k, v in KEY_CODES.items()}


def _pack(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {KEY_CODES.get(k, k): _pack(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_pack(v) for v in d]
    return d


def _unpack(d: Any) -> Any:
    if isinstance(d, dict):
        return {_code(k, _KEY_NAME): _unpack(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_unpack(v) for v in d]
    return d


def _code(value: Any, names: Mapping[int, str]) -> Any:
    """A code of the table back to its name; text stays text."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in names:
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
        KIND_CODES.get(payload["kind"], payload["kind"]),
        payload["src"],
        payload["prio"],
        QUALITY_CODES.get(payload["tq"], payload["tq"]),
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
        "kind": _code(kind, _KIND_NAME),
        "src": src,
        "prio": prio,
        "tq": _code(tq, _TQ_NAME),
        "recs": [{"tb": tb, "tu": tu, "d": _unpack(d)} for tb, tu, d in recs],
    }


SHORT_VERSION = 2


def short(payload: Mapping[str, Any]) -> list[Any]:
    """The shortest form of a life-safety message, for a bearer whose messages are too
    small for the compact signed one (a BeiDou card carries 13 to 106 bytes):

        [2, ep counter, seq, kind, who, lat, lon]

    `who` the wearable or the vessel's MMSI, lat/lon in 1e-5 degrees (null when unknown).
    It carries no signature: on such a bearer only the bearer's own sender identity (a
    BeiDou card number) can vouch for it, and its (ep counter, seq) names the signed copy
    that follows by MQTT."""
    d = payload["recs"][0]["d"] if payload.get("recs") else {}
    got = d.get("fix")
    fix: Mapping[str, Any] = got if isinstance(got, Mapping) else {}
    lat, lon = d.get("lat", fix.get("lat")), d.get("lon", fix.get("lon"))
    where = (
        [round(lat * 1e5), round(lon * 1e5)]
        if isinstance(lat, float | int) and isinstance(lon, float | int)
        else [None, None]
    )
    who = d.get("device", d.get("mmsi"))
    kind = KIND_CODES.get(payload["kind"], payload["kind"])
    return [SHORT_VERSION, payload["ep"][0], payload["seq"], kind, who, *where]


def unshort(form: Any) -> dict[str, Any]:
    """What a short form says (the platform's side), checked."""
    if not isinstance(form, list) or len(form) != 7 or form[0] != SHORT_VERSION:
        raise EnvelopeError(EnvelopeReason.PAYLOAD, "not a short form version 2 array")
    _v, ep, seq, kind, who, lat, lon = form
    out = {"ep": ep, "seq": seq, "kind": _code(kind, _KIND_NAME), "who": who}
    if isinstance(lat, int) and isinstance(lon, int):
        out |= {"lat": lat / 1e5, "lon": lon / 1e5}
    return out


def shortened(signed: bytes) -> bytes:
    """The short form, as CBOR, of a compact signed message this gateway made."""
    return cbor2.dumps(short(unpack(cbor2.loads(cbor2.loads(signed).value[2]))))


# What a short form's signature is made over, before its CBOR: a signature of this
# gateway's key over anything else (an envelope, a command) can never pass for one.
SHORT_CONTEXT = b"gridedge short form 2\0"
SIGNATURE_BYTES = 64


def short_to_sign(short_cbor: bytes) -> bytes:
    """What the gateway's key signs for a signed short form."""
    return SHORT_CONTEXT + short_cbor


def read_short(data: bytes) -> tuple[dict[str, Any], bytes, bytes | None]:
    """The platform's side: a short form, bare or signed (its CBOR array followed by the
    64 bytes of an Ed25519 signature over `short_to_sign(that CBOR)`): (what it says, the
    CBOR, the signature or None). The signature is for the caller to check with the key
    of the gateway the bearer's sender identity names."""
    try:
        end = cbor_guard.item_end(data)  # checked before anything decodes it
        form = cbor2.loads(data[:end])
    except cbor_guard.CborRefused as exc:
        raise EnvelopeError(EnvelopeReason.CBOR, f"short form: {exc}") from None
    except Exception as exc:  # hostile bytes: cbor2 raises several types, all mean "not CBOR"
        raise EnvelopeError(EnvelopeReason.CBOR, f"short form: {type(exc).__name__}") from None
    body, rest = data[:end], data[end:]
    if rest and len(rest) != SIGNATURE_BYTES:
        raise EnvelopeError(EnvelopeReason.STRUCTURE, f"{len(rest)} bytes after the short form")
    return unshort(form), body, rest or None
