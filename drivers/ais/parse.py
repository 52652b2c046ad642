"""AIS parser, sans-IO: `!AIVDM`/`!AIVDO` bytes in, `AisReport`/`Rejected` events out.

Theory of operation: lines are framed and checksum-verified (IEC 61162-1; tag
blocks and trailing receiver metadata are tolerated), fragments are reassembled
per (talker, channel, sequence id) with a timeout, and the joined payload is
checked before pyais decodes it: armouring characters must be in the 6-bit set,
fill bits in 0-5, and the bit length must fit the message type (ITU-R M.1371-5),
since pyais decodes a truncated payload into wrong values without complaint. A
decoded report is normalised: degrees, knots, and fields that say "not available"
are left out rather than published as 91, 181, 102.3, 360 or 511.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyais
from pyais.messages import MSG_CLASS

from drivers.nmea0183 import LineFramer, Reason, Rejected, Sentence, checked

FRAGMENT_TIMEOUT_MS = 2_000
MAX_FRAGMENTS = 9  # the fragment count is one digit
MAX_PENDING = 64  # reassembly slots; a flood of first fragments cannot grow memory

# Minimum payload bit length per message type (ITU-R M.1371-5, Annex 8): where the
# last field we read ends, so no published value is ever decoded from past the end
# of a short payload (pyais would silently decode zeros there). Longer payloads
# are accepted, as gpsd does: transmitters pad, and the fields are at fixed offsets.
_MIN_BITS: dict[int, int] = {
    1: 137,
    2: 137,
    3: 137,
    4: 134,
    5: 420,
    6: 88,
    7: 72,
    8: 56,
    9: 128,
    10: 72,
    11: 134,
    12: 72,
    13: 72,
    14: 40,
    15: 88,
    16: 96,
    17: 80,
    18: 133,
    19: 301,
    20: 72,
    21: 272,
    22: 168,
    23: 160,
    24: 160,
    25: 40,
    26: 60,
    27: 96,
}
MAX_BITS = 1064  # five slots: the longest any AIS message can be
_POSITIONED = frozenset({1, 2, 3, 4, 9, 11, 17, 18, 19, 21, 27})
POSITION_TYPES = frozenset({1, 2, 3, 9, 18, 19, 27})


# 6-bit ASCII armouring: '0'..'W' and '`'..'w' (ITU-R M.1371, IEC 61162-1 table 7)
_ARMOUR = re.compile(r"[0-W`-w]+")


def _armour_ok(payload: str) -> bool:
    return _ARMOUR.fullmatch(payload) is not None


@dataclass(frozen=True, slots=True)
class AisReport:
    """One decoded AIS message."""

    tb: int
    msg_type: int
    mmsi: int
    channel: str
    data: dict[str, Any]
    payload: str  # the joined armoured payload: the same report heard twice has the same one
    own: bool = False  # !AIVDO: our own station


@dataclass(slots=True)
class _Pending:
    count: int
    first_tb: int
    parts: dict[int, tuple[str, int]] = field(default_factory=dict)
    raw: list[bytes] = field(default_factory=list)


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _text(v: Any) -> str:
    return str(v).strip().rstrip("@").strip() if v is not None else ""


def _position(d: dict[str, Any], out: dict[str, Any], *, scale: float = 1.0) -> None:
    lat, lon = _num(d.get("lat")), _num(d.get("lon"))
    if lat is not None and lon is not None:
        lat, lon = lat * scale, lon * scale
        # 91 / 181 mean "not available"; anything else out of range is nonsense
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            out["lat"], out["lon"] = round(lat, 7), round(lon, 7)


def normalise(msg_type: int, d: dict[str, Any]) -> dict[str, Any]:
    """pyais's fields to ours, dropping 'not available' values."""
    out: dict[str, Any] = {}
    if msg_type == 17:
        # Type 17 carries its position in 1/10 minute; _decode turns it into minutes.
        _position(d, out, scale=1 / 60)
    elif msg_type in _POSITIONED:
        _position(d, out)
    if msg_type in POSITION_TYPES:
        _motion(msg_type, d, out)
    if msg_type in (5, 19, 24):
        _static(d, out)
    if msg_type == 5:
        _voyage(d, out)
    if msg_type == 24:
        out["part"] = int(d.get("partno", 0))
    if msg_type == 14:
        out["text"] = _text(d.get("text"))
    return out


def _motion(msg_type: int, d: dict[str, Any], out: dict[str, Any]) -> None:
    """Speed, course, heading, status (and a SAR aircraft's altitude), where available."""
    sog = _num(d.get("speed"))
    na_sog = 63.0 if msg_type == 27 else (1023.0 if msg_type == 9 else 102.3)
    if sog is not None and sog < na_sog:
        out["sog"] = sog
    cog = _num(d.get("course"))
    if cog is not None and 0 <= cog < 360 and not (msg_type == 27 and cog == 511):
        out["cog"] = cog
    heading = _num(d.get("heading"))
    if heading is not None and 0 <= heading < 360:
        out["heading"] = int(heading)
    status = d.get("status")
    if status is not None and msg_type in (1, 2, 3, 27):
        out["nav_status"] = int(status)
    if msg_type == 9:
        alt = _num(d.get("alt"))
        if alt is not None and alt < 4095:
            out["alt"] = alt


def _static(d: dict[str, Any], out: dict[str, Any]) -> None:
    """Name, call sign, destination, vendor, type and dimensions (types 5, 19, 24)."""
    for key, theirs in (("name", "shipname"), ("callsign", "callsign"), ("destination", "destination")):
        if v := _text(d.get(theirs)):
            out[key] = v
    if v := _text(d.get("vendorid")):
        out["vendorid"] = v
    if d.get("ship_type") is not None:
        out["ship_type"] = int(d["ship_type"])
    dims = [d.get(k) for k in ("to_bow", "to_stern", "to_port", "to_starboard")]
    if all(isinstance(x, int) for x in dims) and any(dims):
        out["dims"] = dims


def _voyage(d: dict[str, Any], out: dict[str, Any]) -> None:
    """IMO number, ETA and draught (type 5)."""
    if d.get("imo"):
        out["imo"] = int(d["imo"])
    eta = [d.get(k) for k in ("month", "day", "hour", "minute")]
    m, day, h, mi = (x if isinstance(x, int) else -1 for x in eta)
    # month or day 0, hour 24, minute 60: not available (ITU-R M.1371 table 48)
    if m > 0 and day > 0 and 0 <= h < 24 and 0 <= mi < 60:
        out["eta"] = f"{m:02d}-{day:02d}T{h:02d}:{mi:02d}"
    draught = _num(d.get("draught"))
    if draught:
        out["draught"] = draught


# The 6-bit armouring is the base64 alphabet in another order: translate, decode, and the
# payload's bits are one integer (ITU-R M.1371-5, 8.2.4 and table 47).
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TO_B64 = str.maketrans({chr(v + 48 if v < 40 else v + 56): _B64[v] for v in range(64)})
_FAST = frozenset({1, 2, 3, 18})  # class A and B position reports
# (start, width) of the fields a position report is published with, by type (tables 45, 70)
_CLASS_A = {
    "status": (38, 4),
    "sog": (50, 10),
    "lon": (61, 28),
    "lat": (89, 27),
    "cog": (116, 12),
    "hdg": (128, 9),
}
_CLASS_B = {"sog": (46, 10), "lon": (57, 28), "lat": (85, 27), "cog": (112, 12), "hdg": (124, 9)}


def _fast_position(msg_type: int, payload: str) -> tuple[int, dict[str, Any]]:
    """The MMSI and our fields of a type 1, 2, 3 or 18 report whose length was checked: the
    same values as pyais's decode through `normalise` (a test holds the two equal)."""
    pad = -len(payload) % 4
    n = int.from_bytes(base64.b64decode(payload.translate(_TO_B64) + "A" * pad), "big") >> (6 * pad)
    total = len(payload) * 6
    f = _CLASS_A if msg_type != 18 else _CLASS_B

    def get(start: int, width: int) -> int:
        return (n >> (total - start - width)) & ((1 << width) - 1)

    def signed(start: int, width: int) -> int:
        v = get(start, width)
        return v - (1 << width) if v >> (width - 1) else v

    out: dict[str, Any] = {}
    lat, lon = signed(*f["lat"]), signed(*f["lon"])
    if -54_000_000 <= lat <= 54_000_000 and -108_000_000 <= lon <= 108_000_000:  # 1/10,000 minute
        # pyais's rounding (to 6 decimals), so both paths publish the same number
        out["lat"], out["lon"] = ((10 * lat + 3) // 6) / 1e6, ((10 * lon + 3) // 6) / 1e6
    if (sog := get(*f["sog"])) < 1023:  # 102.3 knots: not available
        out["sog"] = sog / 10
    if (cog := get(*f["cog"])) < 3600:
        out["cog"] = cog / 10
    if (hdg := get(*f["hdg"])) < 360:
        out["heading"] = hdg
    if msg_type != 18:
        out["nav_status"] = get(*f["status"])
    return get(8, 30), out


def _fragment(f: tuple[str, ...]) -> tuple[int, int, str, str, str, int] | str:
    """(count, number, sequence id, channel, payload, fill bits) of a !AIVDM sentence's
    fields, checked; or why they are malformed."""
    if len(f) < 6:
        return "too few fields"
    count_s, num_s, seq_id, channel, payload, fill_s = f[:6]
    if not (count_s.isdigit() and num_s.isdigit() and fill_s.isdigit() and len(fill_s) == 1):
        return "fragment count, number or fill bits"
    count, num, fill = int(count_s), int(num_s), int(fill_s)
    if not (1 <= count <= MAX_FRAGMENTS and 1 <= num <= count and fill <= 5):
        return "fragment numbering or fill bits out of range"
    if not payload or not _armour_ok(payload):
        return "payload armouring"
    if num < count and fill != 0:
        return "fill bits on a non-final fragment"
    return count, num, seq_id, channel, payload, fill


class AisParser:
    """Feed bytes from an AIS receiver; get decoded reports and counted rejections."""

    def __init__(
        self,
        *,
        fragment_timeout_ms: int = FRAGMENT_TIMEOUT_MS,
        seen: Callable[[int, str, int], bool] | None = None,
    ) -> None:
        # `seen(msg_type, payload, now)`: True for a report already heard (another receiver,
        # a relay): it is dropped before the costly decode (the station's dedup, asked first)
        self._seen = seen
        self._framer = LineFramer()
        self._timeout = fragment_timeout_ms
        self._pending: dict[tuple[str, str, str], _Pending] = {}
        self.ignored = 0

    def feed(self, data: bytes, *, now: int) -> list[AisReport | Rejected]:
        out: list[AisReport | Rejected] = list(self.expire(now))
        for s in checked(self._framer, data):
            if isinstance(s, Rejected):
                out.append(s)
            elif s.start == "!" and s.type in ("VDM", "VDO"):
                self._sentence(s, now, out)
            else:
                self.ignored += 1  # $GP..., $PGHP wrappers, other talkers on a shared port
        return out

    def expire(self, now: int) -> list[Rejected]:
        """Incomplete multi-fragment messages older than the timeout."""
        out: list[Rejected] = []
        for key, p in list(self._pending.items()):
            if now - p.first_tb > self._timeout:
                del self._pending[key]
                out.append(Rejected(Reason.FRAGMENT, b"\n".join(p.raw)[:200], "missing fragment (timeout)"))
        return out

    def _sentence(self, s: Sentence, now: int, out: list[AisReport | Rejected]) -> None:
        got = _fragment(s.fields)
        if isinstance(got, str):
            out.append(Rejected(Reason.MALFORMED, s.raw, got))
            return
        count, num, seq_id, channel, payload, fill = got
        own = s.type == "VDO"
        if count == 1:
            self._decode(payload, fill, channel=channel, own=own, raw=s.raw, now=now, out=out)
            return
        p = self._reassemble((s.talker, channel, seq_id), count, num, raw=s.raw, now=now, out=out)
        if p is None:
            return
        p.parts[num] = (payload, fill)
        p.raw.append(s.raw)
        if len(p.parts) == count:
            del self._pending[(s.talker, channel, seq_id)]
            joined = "".join(p.parts[i][0] for i in range(1, count + 1))
            self._decode(
                joined, p.parts[count][1], channel=channel, own=own, raw=b"\n".join(p.raw), now=now, out=out
            )

    def _reassemble(
        self,
        key: tuple[str, str, str],
        count: int,
        num: int,
        *,
        raw: bytes,
        now: int,
        out: list[AisReport | Rejected],
    ) -> _Pending | None:
        """The open slot this fragment belongs to (a first fragment opens one), or None
        when it belongs nowhere (rejected)."""
        p = self._pending.get(key)
        if num == 1:
            if p is not None:
                out.append(Rejected(Reason.FRAGMENT, b"\n".join(p.raw)[:200], "superseded before complete"))
            if len(self._pending) >= MAX_PENDING:
                oldest = min(self._pending, key=lambda k: self._pending[k].first_tb)
                old = self._pending.pop(oldest)
                out.append(Rejected(Reason.FRAGMENT, b"\n".join(old.raw)[:200], "reassembly slots full"))
            p = self._pending[key] = _Pending(count, now)
            return p
        if p is None or p.count != count or num != len(p.parts) + 1:
            if p is not None:
                del self._pending[key]
            out.append(Rejected(Reason.FRAGMENT, raw, "fragment out of order or without its first"))
            return None
        return p

    def _decode(
        self,
        payload: str,
        fill: int,
        *,
        channel: str,
        own: bool,
        raw: bytes,
        now: int,
        out: list[AisReport | Rejected],
    ) -> None:
        bits = len(payload) * 6 - fill
        msg_type = (ord(payload[0]) - 48) - (8 if ord(payload[0]) > 87 else 0)
        lo = _MIN_BITS.get(msg_type)
        if lo is None:
            out.append(Rejected(Reason.UNSUPPORTED, raw[:200], f"message type {msg_type}"))
            return
        if not lo <= bits <= MAX_BITS:
            out.append(
                Rejected(Reason.TRUNCATED, raw[:200], f"type {msg_type}: {bits} bits, need {lo}-{MAX_BITS}")
            )
            return
        if self._seen is not None and self._seen(msg_type, payload, now):
            return
        if msg_type in _FAST:
            # Most of a harbour's traffic: read straight from the payload's bits (pyais's
            # decode and our mapping of its fields cost three times as much).
            fast = _fast_position(msg_type, payload)
            out.append(AisReport(now, msg_type, fast[0], channel, fast[1], payload, own))
            return
        try:
            bv = pyais.bit_vector(payload.encode("ascii"), fill)
            decoded = MSG_CLASS[msg_type].from_vector(bv).asdict()
            if msg_type == 17:
                # pyais reads type 17's 17-bit latitude as unsigned (southern positions come
                # out near +10000'); take both fields as the signed 1/10-minute values they
                # are (ITU-R M.1371 table 71: lon 18 bits at 40, lat 17 bits at 58).
                decoded["lon"] = bv.get_signed(40, 18) / 10
                decoded["lat"] = bv.get_signed(58, 17) / 10
        except Exception as exc:  # pyais raises many types on odd payloads; all mean "cannot trust"
            out.append(Rejected(Reason.BAD_VALUE, raw[:200], f"type {msg_type}: {type(exc).__name__}"))
            return
        if msg_type == 24 and decoded.get("partno") == 1 and bits < 162:
            out.append(Rejected(Reason.TRUNCATED, raw[:200], f"type 24 part B: {bits} bits, need 162"))
            return
        mmsi = decoded.get("mmsi")
        if not isinstance(mmsi, int) or isinstance(mmsi, bool):
            out.append(Rejected(Reason.BAD_VALUE, raw[:200], "mmsi"))
            return
        data = normalise(msg_type, decoded)
        out.append(AisReport(now, msg_type, mmsi, channel, data, payload, own))
