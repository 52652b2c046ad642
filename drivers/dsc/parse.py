"""VHF DSC parser, sans-IO: `$CDDSC` (+ `$CDDSE`) bytes in, `DscCall`/`Rejected` out.

Fields of `$--DSC` (IEC 61162-1; codes are the last two digits of ITU-R M.493's
symbols): 1 format specifier, 2 address (MMSI + a trailing 0), 3 category,
4 nature of distress or first telecommand, 5 type of communication or second
telecommand, 6 position (quadrant digit, ddmm lat, dddmm lon) or channel,
7 time (hhmm UTC, 8888 = unknown), 8 MMSI of the ship in distress (relays,
acknowledgements), 9 nature of distress (relays), 10 acknowledgement (R, B, S),
11 expansion indicator (E: a `$--DSE` with the enhanced position follows).

A call whose expansion flag is set is held until its DSE arrives, the next other
sentence arrives, or `poll(now)` finds it waited `dse_wait_ms`; then it is
reported, with the DSE's extra position digits when there was one. A distress is
never dropped for an unknown nature code: it is reported as undesignated with the
raw code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drivers.nmea0183 import LineFramer, Reason, Rejected, Sentence, checked

DSE_WAIT_MS = 500

FORMATS = {"02": "area", "12": "distress", "14": "group", "16": "all_ships", "20": "individual", "23": "auto"}
CATEGORIES = {"00": "routine", "08": "safety", "10": "urgency", "12": "distress"}
NATURES = {
    "00": "fire",
    "01": "flooding",
    "02": "collision",
    "03": "grounding",
    "04": "listing",
    "05": "sinking",
    "06": "adrift",
    "07": "undesignated",
    "08": "abandoning",
    "09": "piracy",
    "10": "mob",
    "12": "epirb",
}
# First telecommands (ITU-R M.493 table A1-4.1, symbols 100-126)
TELECOMMANDS = {
    "00": "f3e_g3e_all",
    "01": "f3e_g3e_duplex",
    "03": "polling",
    "04": "unable_to_comply",
    "05": "end_of_call",
    "06": "data",
    "09": "j3e_tel",
    "10": "distress_ack",
    "12": "distress_relay",
    "13": "f1b_fec",
    "15": "f1b_arq",
    "18": "test",
    "21": "position_update",
    "26": "no_information",
}
ACKS = {"R": "request", "B": "acknowledgement", "S": "end"}


@dataclass(frozen=True, slots=True)
class DscCall:
    """One DSC call as received; `distress` tells which kind the gateway must raise."""

    tb: int
    distress: bool
    data: dict[str, Any]


@dataclass(slots=True)
class _Held:
    tb: int
    mmsi: str
    data: dict[str, Any]
    raw: list[bytes] = field(default_factory=list)


def _mmsi(address: str) -> str | None:
    # The 10-digit address field is the 9-digit MMSI followed by a 0 (IEC 61162-1).
    if len(address) == 10 and address.isdigit():
        return address[:9]
    return None


def _position(value: str) -> tuple[float, float] | None:
    """Quadrant + ddmm + dddmm (ITU-R M.493 §8.1.2): 0 NE, 1 NW, 2 SE, 3 SW."""
    if len(value) != 10 or not value.isdigit() or value[0] not in "0123" or value[1:] == "999999999":
        return None
    q = value[0]
    lat_d, lat_m, lon_d, lon_m = int(value[1:3]), int(value[3:5]), int(value[5:8]), int(value[8:10])
    if lat_d > 90 or lon_d > 180 or lat_m > 59 or lon_m > 59:
        return None
    lat = lat_d + lat_m / 60
    lon = lon_d + lon_m / 60
    return (-lat if q in "23" else lat), (-lon if q in "13" else lon)


class DscParser:
    """Feed bytes from a VHF radio's DSC port; get calls and counted rejections."""

    def __init__(self, *, dse_wait_ms: int = DSE_WAIT_MS) -> None:
        self._framer = LineFramer()
        self._wait = dse_wait_ms
        self._held: _Held | None = None
        self.ignored = 0

    def feed(self, data: bytes, *, now: int) -> list[DscCall | Rejected]:
        out: list[DscCall | Rejected] = []
        for s in checked(self._framer, data):
            if isinstance(s, Rejected):
                out.append(s)
            elif s.type == "DSE":
                self._dse(s, out)
            else:
                self._release(out)
                if s.type == "DSC":
                    self._dsc(s, now, out)
                else:
                    self.ignored += 1
        out.extend(self.poll(now))
        return out

    def poll(self, now: int) -> list[DscCall | Rejected]:
        """Report a held call whose DSE did not come in time."""
        out: list[DscCall | Rejected] = []
        if self._held is not None and now - self._held.tb >= self._wait:
            self._release(out)
        return out

    def flush(self) -> list[DscCall | Rejected]:
        """Report a held call now (the link is going away)."""
        out: list[DscCall | Rejected] = []
        self._release(out)
        return out

    @property
    def waiting(self) -> bool:
        return self._held is not None

    def _release(self, out: list[DscCall | Rejected]) -> None:
        held, self._held = self._held, None
        if held is not None:
            out.append(DscCall(held.tb, bool(held.data.get("_distress")), _public(held.data)))

    def _dsc(self, s: Sentence, now: int, out: list[DscCall | Rejected]) -> None:
        f = [x.strip() for x in s.fields]
        if len(f) < 10 or not any(f):
            out.append(Rejected(Reason.MALFORMED, s.raw, "empty or short DSC sentence"))
            return
        f += [""] * (11 - len(f))
        fmt, address, cat, tc1, tc2, pos, hhmm, distressed, nature2, ack, expansion = f[:11]
        mmsi = _mmsi(address)
        if fmt not in FORMATS or mmsi is None:
            out.append(Rejected(Reason.BAD_VALUE, s.raw, f"format {fmt!r} or address {address!r}"))
            return
        if cat and cat not in CATEGORIES:
            out.append(Rejected(Reason.BAD_VALUE, s.raw, f"category {cat!r}"))
            return
        if ack and ack not in ACKS:
            out.append(Rejected(Reason.BAD_VALUE, s.raw, f"acknowledgement flag {ack!r}"))
            return
        d = _call_basics(int(mmsi), fmt, cat, ack, hhmm=hhmm, pos=pos)
        if fmt == "12":  # a distress alert: field 4 is the nature of distress
            _alert(d, tc1, self_cancel=_mmsi(distressed) == mmsi)
        elif tc1 in ("10", "12") and cat == "12":  # distress acknowledgement or relay
            _relay_or_ack(d, tc1, mmsi, _mmsi(distressed), nature2)
        elif tc1 not in TELECOMMANDS:
            out.append(Rejected(Reason.UNSUPPORTED, s.raw, f"telecommand {tc1!r}"))
            return
        else:
            d["telecommand"] = TELECOMMANDS[tc1]
            if tc2:
                d["telecommand2"] = TELECOMMANDS.get(tc2, tc2)
        d["_distress"] = "call" in d
        if expansion == "E":
            self._held = _Held(now, mmsi, d, [s.raw])
        else:
            out.append(DscCall(now, d["_distress"], _public(d)))

    def _dse(self, s: Sentence, out: list[DscCall | Rejected]) -> None:
        f = [x.strip() for x in s.fields]
        held = self._held
        if len(f) < 6 or _mmsi(f[3]) is None:
            out.append(Rejected(Reason.MALFORMED, s.raw, "DSE fields"))
            return
        if held is None or _mmsi(f[3]) != held.mmsi:
            self.ignored += 1  # an expansion without the call it expands: nothing to refine
            return
        # Pairs of (code, data); code 00 is the enhanced position: 4+4 digits of minutes
        # appended to the call's whole minutes (ITU-R M.821).
        for code, data in zip(f[4::2], f[5::2], strict=False):
            if code == "00" and len(data) == 8 and data.isdigit() and "lat" in held.data:
                lat, lon = held.data["lat"], held.data["lon"]
                dlat, dlon = int(data[:4]) / 10000 / 60, int(data[4:]) / 10000 / 60
                held.data["lat"] = round(lat + (dlat if lat >= 0 else -dlat), 6)
                held.data["lon"] = round(lon + (dlon if lon >= 0 else -dlon), 6)
                held.data["position_enhanced"] = True
        self._release(out)


def _call_basics(mmsi: int, fmt: str, cat: str, ack: str, *, hhmm: str, pos: str) -> dict[str, Any]:
    """What every call says: who, its format and category, when and where."""
    d: dict[str, Any] = {"mmsi": mmsi, "format": FORMATS[fmt]}
    if cat:
        d["category"] = CATEGORIES[cat]
    if ack:
        d["ack"] = ACKS[ack]
    if len(hhmm) == 4 and hhmm.isdigit() and hhmm != "8888" and int(hhmm[:2]) < 24 and int(hhmm[2:]) < 60:
        d["utc_hhmm"] = hhmm
    where = _position(pos)
    if where is not None:
        d["lat"], d["lon"] = round(where[0], 6), round(where[1], 6)
    return d


def _alert(d: dict[str, Any], nature: str, *, self_cancel: bool) -> None:
    """A distress alert: its nature; the sender naming itself as distressed cancels it."""
    d["call"] = "alert"
    d["nature"] = NATURES.get(nature, "undesignated")
    d["nature_code"] = nature
    if self_cancel:
        d["cancel"] = True


def _relay_or_ack(d: dict[str, Any], tc1: str, sender: str, distressed: str | None, nature: str) -> None:
    """A distress acknowledgement (telecommand 10) or relay (12): of whom, and why."""
    d["call"] = "ack" if tc1 == "10" else "relay"
    if distressed is not None:
        d["ack_of" if tc1 == "10" else "relay_of"] = int(distressed)
        if distressed == sender and tc1 == "10":
            d["cancel"] = True
    if nature:
        d["nature"] = NATURES.get(nature, "undesignated")
        d["nature_code"] = nature


def _public(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith("_")}
