"""GNSS NMEA 0183 parser, sans-IO: bytes in, `Fix`/`NoFix`/`Rejected` events out.

Theory of operation: a receiver reports one navigation epoch as a burst of
sentences that share a UTC time of day (RMC, GGA, GNS, GLL carry it; GSA and VTG
do not and belong to the burst they sit in). The parser merges a burst into one
epoch and reports it when the next burst's time appears, or, once it has seen
the same sentence type close three bursts in a row (and only once in each), as
soon as that type arrives, so a fix is not held back a whole cycle. Every talker
is accepted (GP, GL, GA, BD, GB, GN, GQ, ...): the sentence type decides the
meaning. Field meanings follow NMEA 0183 v4.11.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import json
import math
from dataclasses import dataclass, field
from typing import NamedTuple

from drivers.nmea0183 import LineFramer, Reason, Rejected, Sentence, check

KNOT_MPS = 1852.0 / 3600.0
DAY_MS = 86_400_000
TIMED = frozenset({"RMC", "GGA", "GNS", "GLL", "ZDA"})
USED = TIMED | {"GSA", "VTG"}
# Sentences a receiver repeats byte for byte while the sky is unchanged: a line seen
# again (same bytes, so the same checksum) is not checked again.
REPEATING = frozenset({"GSA", "GSV"})


class Fix(NamedTuple):
    """One navigation epoch with a valid position. (A NamedTuple: one is made per epoch,
    and a frozen dataclass's __init__ cost as much as parsing a sentence.)"""

    tb: int  # boot ms when the epoch's first sentence arrived
    tod_ms: int | None  # UTC time of day the receiver stamped, when it did
    utc_ms: int | None  # full UTC time, when the receiver gave a date
    lat: float
    lon: float
    alt: float | None
    mode: int  # 2 or 3
    sats: int | None
    hdop: float | None
    speed: float | None  # m/s
    course: float | None  # degrees true

    def record(self) -> dict[str, object]:
        """The `d` of a `gnss.fix` record (docs/envelope-and-topics.md): what the receiver told us."""
        d: dict[str, object] = {"lat": self.lat, "lon": self.lon, "fix": self.mode}
        if self.alt is not None:
            d["alt"] = self.alt
        if self.sats is not None:
            d["sats"] = self.sats
        if self.hdop is not None:
            d["hdop"] = self.hdop
        if self.speed is not None:
            d["speed"] = self.speed
        if self.course is not None:
            d["course"] = self.course
        if self.utc_ms is not None:
            d["utc"] = self.utc_ms
        return d


class NoFix(NamedTuple):
    """An epoch in which the receiver said it had no valid position."""

    tb: int
    tod_ms: int | None


Event = Fix | NoFix | Rejected


class BadField(ValueError):
    """A field that does not parse; the sentence is rejected."""


def _opt_float(s: str) -> float | None:
    if not s:
        return None
    try:
        v = float(s)
    except ValueError:
        raise BadField(s) from None
    if not math.isfinite(v):
        raise BadField(s)
    return v


def _opt_int(s: str) -> int | None:
    if not s:
        return None
    if not s.isdigit():
        raise BadField(s)
    return int(s)


def _tod(s: str) -> int | None:
    """hhmmss[.sss] to ms of day."""
    if not s:
        return None
    if len(s) < 6 or not s[:6].isdigit():
        raise BadField(s)
    h, m, sec = int(s[0:2]), int(s[2:4]), float(s[4:]) if len(s) > 6 else float(s[4:6])
    if h > 23 or m > 59 or not 0 <= sec < 61:
        raise BadField(s)
    return (h * 3600 + m * 60) * 1000 + round(sec * 1000)


def _coord(value: str, hemi: str, deg_digits: int, limit: float) -> float | None:
    """NMEA ddmm.mmmm / dddmm.mmmm plus hemisphere to signed degrees."""
    if not value and not hemi:
        return None
    if hemi not in _HEMI or len(value) < deg_digits + 2:
        raise BadField(value)
    dot = value.find(".")
    split = (dot if dot >= 0 else len(value)) - 2
    head, tail = value[:split], value[split:]
    if split < 1 or not head.isdigit() or not tail[:2].isdigit():
        raise BadField(value)
    try:
        minutes = float(tail)
    except ValueError:
        raise BadField(value) from None
    if not minutes < 60:  # also NaN
        raise BadField(value)
    v = int(head) + minutes / 60.0
    if v > limit:
        raise BadField(value)
    return v * _HEMI[hemi]


_HEMI = {"N": 1.0, "E": 1.0, "S": -1.0, "W": -1.0}


@functools.lru_cache(maxsize=8)  # a receiver repeats the same date every epoch
def _date(ddmmyy: str) -> tuple[int, int, int] | None:
    if not ddmmyy:
        return None
    if len(ddmmyy) != 6 or not ddmmyy.isdigit():
        raise BadField(ddmmyy)
    d, m, y = int(ddmmyy[:2]), int(ddmmyy[2:4]), int(ddmmyy[4:])
    # NMEA's two-digit year: 80-99 are 1980-1999 (GPS began in 1980).
    year = 1900 + y if y >= 80 else 2000 + y
    _check_date(year, m, d, ddmmyy)
    return year, m, d


def _check_date(year: int, month: int, day: int, raw: str) -> None:
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise BadField(raw)


@dataclass(slots=True)
class _Epoch:
    tb: int
    tod: int | None
    types: list[str] = field(default_factory=list)
    lat: float | None = None
    lon: float | None = None
    valid: bool | None = None  # None: nobody said
    alt: float | None = None
    sats: int | None = None
    hdop: float | None = None
    speed: float | None = None
    course: float | None = None
    mode: int | None = None
    date: tuple[int, int, int] | None = None

    def position(self, lat: float | None, lon: float | None, valid: bool) -> None:
        if valid and lat is not None and lon is not None:
            self.lat, self.lon = lat, lon
            self.valid = True
        elif self.valid is None:
            self.valid = False


class NmeaParser:
    """Feed bytes from a GNSS receiver; get one event per epoch plus rejections.

    A little over the project's usual class size: one epoch's state (its time, the
    position, the satellites of GSA and GSV) is assembled across the sentence handlers
    below, which share it; split apart, each would need the whole epoch passed along."""

    def __init__(self) -> None:
        self._framer = LineFramer()
        self._epoch: _Epoch | None = None
        self._date: tuple[int, int, int] | None = None
        self._date_tod: int = 0
        self._gsa_mode: int | None = None
        self._closers: list[str] = []  # the type that closed each recent epoch
        self._ender: str | None = None
        self.ignored = 0  # well-formed sentences this parser has no use for
        self._handlers = {
            "RMC": self._rmc,
            "GGA": self._gga,
            "GNS": self._gns,
            "GLL": self._gll,
            "VTG": self._vtg,
            "GSA": self._gsa,
            "ZDA": self._zda,
        }
        self._day_cache: tuple[tuple[int, int, int], int] | None = None
        self._tod_raw = ""  # the last time field parsed, and its value
        self._tod_ms: int | None = None
        self._pos_raw: tuple[str, str, str, str] = ("", "", "", "")  # likewise the position
        self._pos: tuple[float | None, float | None] = (None, None)
        self._repeats: dict[bytes, Sentence] = {}  # lines a receiver sends unchanged epoch after epoch

    def feed(self, data: bytes, *, now: int) -> list[Event]:
        """Bytes in (any split), events out; `now` is boot ms."""
        out: list[Event] = []
        for item in self._framer.feed(data):
            if isinstance(item, Rejected):
                out.append(item)
                continue
            if item.startswith(b"{"):
                out.extend(self._gpsd_json(item, now))
                continue
            s = self._repeats.get(item) or self._check(item)
            if isinstance(s, Rejected):
                out.append(s)
                continue
            if s.type not in USED or s.start != "$":
                self.ignored += 1
                continue
            try:
                self._sentence(s, now, out)
            except BadField as exc:
                out.append(Rejected(Reason.BAD_VALUE, s.raw, f"{s.type}: {exc}"))
            except IndexError:
                out.append(Rejected(Reason.MALFORMED, s.raw, f"{s.type}: too few fields"))
            except (ValueError, OverflowError):
                # any field that is not the number it must be (a time "12:35:19", "1e999"):
                # a bad value in a checksummed sentence is data, never the driver's end
                out.append(Rejected(Reason.BAD_VALUE, s.raw, f"{s.type}: a field is not a number"))
        return out

    def _check(self, line: bytes) -> Sentence | Rejected:
        s = check(line)
        if not isinstance(s, Rejected) and s.type in REPEATING:
            if len(self._repeats) >= 16:
                self._repeats.clear()
            self._repeats[line] = s
        return s

    def flush(self) -> list[Event]:
        """Report the epoch in progress (the receiver went quiet)."""
        out: list[Event] = []
        self._close(out, closer=None)
        return out

    # ------------------------------------------------------------------------

    def _sentence(self, s: Sentence, now: int, out: list[Event]) -> None:
        f = s.fields
        t = s.type
        tod: int | None = None
        if t in TIMED:  # the time of day is the first field, but GLL's fifth
            raw = f[0] if t != "GLL" else f[4] if len(f) > 4 else ""
            if raw == self._tod_raw:  # RMC and GGA of one epoch carry the same time
                tod = self._tod_ms
            else:
                tod = _tod(raw)
                self._tod_raw, self._tod_ms = raw, tod
        ep = self._epoch
        if ep is None or (tod is not None and ep.tod is not None and tod != ep.tod):
            self._close(out, closer=ep.types[-1] if ep and ep.types else None)
            ep = self._epoch = _Epoch(tb=now, tod=tod)
        elif ep.tod is None and tod is not None:
            ep.tod = tod
        ep.types.append(t)
        self._handlers[t](ep, f)
        if t == self._ender:
            self._close(out, closer=None)

    def _position(self, la: str, ns: str, lo: str, ew: str) -> tuple[float | None, float | None]:
        """Latitude and longitude fields to degrees; RMC and GGA of one epoch repeat them."""
        raw = (la, ns, lo, ew)
        if raw != self._pos_raw:
            pos = (_coord(la, ns, 2, 90.0), _coord(lo, ew, 3, 180.0))
            self._pos_raw, self._pos = raw, pos
        return self._pos

    def _rmc(self, ep: _Epoch, f: tuple[str, ...]) -> None:
        valid = f[1] == "A" and not (len(f) > 11 and f[11] == "N")
        lat, lon = self._position(f[2], f[3], f[4], f[5])
        date = _date(f[8])
        speed = _opt_float(f[6])
        course = _opt_float(f[7])
        ep.position(lat, lon, valid)
        if valid:
            if speed is not None:
                ep.speed = speed * KNOT_MPS
            if course is not None:
                ep.course = course
        if date is not None:
            ep.date = date

    def _gga(self, ep: _Epoch, f: tuple[str, ...]) -> None:
        quality = _opt_int(f[5])
        valid = bool(quality) and quality != 6  # 0 invalid, 6 dead reckoning estimate
        self._position_sats_alt(ep, f, valid)

    def _position_sats_alt(self, ep: _Epoch, f: tuple[str, ...], valid: bool) -> None:
        """GGA and GNS share fields 1-8; parse them all before changing the epoch."""
        lat, lon = self._position(f[1], f[2], f[3], f[4])
        sats, hdop, alt = _opt_int(f[6]), _opt_float(f[7]), _opt_float(f[8])
        ep.position(lat, lon, valid)
        if valid:
            ep.sats, ep.hdop = sats, hdop
            if alt is not None:
                ep.alt = alt

    def _gns(self, ep: _Epoch, f: tuple[str, ...]) -> None:
        modes = f[5]
        valid = bool(modes) and any(c not in "NE" for c in modes)
        self._position_sats_alt(ep, f, valid)

    def _gll(self, ep: _Epoch, f: tuple[str, ...]) -> None:
        valid = len(f) > 5 and f[5] == "A" and not (len(f) > 6 and f[6] == "N")
        ep.position(*self._position(f[0], f[1], f[2], f[3]), valid)

    def _vtg(self, ep: _Epoch, f: tuple[str, ...]) -> None:
        if len(f) > 8 and f[8] == "N":
            return
        course = _opt_float(f[0])
        knots = _opt_float(f[4]) if len(f) > 4 else None
        if course is not None and ep.course is None:
            ep.course = course
        if knots is not None and ep.speed is None:
            ep.speed = knots * KNOT_MPS

    def _gsa(self, ep: _Epoch, f: tuple[str, ...]) -> None:
        mode = _opt_int(f[1])
        if mode is not None and mode not in (1, 2, 3):
            raise BadField(f[1])
        if mode is not None:
            # Several GSA per epoch (one per constellation) agree on the fix type.
            ep.mode = mode if ep.mode is None else max(ep.mode, mode)
            self._gsa_mode = ep.mode

    def _zda(self, ep: _Epoch, f: tuple[str, ...]) -> None:
        if f[1] and f[2] and f[3]:
            if not (f[1].isdigit() and f[2].isdigit() and f[3].isdigit() and len(f[3]) == 4):
                raise BadField(",".join(f[1:4]))
            y, m, d = int(f[3]), int(f[2]), int(f[1])
            _check_date(y, m, d, ",".join(f[1:4]))
            ep.date = (y, m, d)

    def _close(self, out: list[Event], closer: str | None) -> None:
        ep = self._epoch
        self._epoch = None
        if ep is None:
            return
        self._learn(ep, closer)
        if ep.date is not None and ep.tod is not None:
            self._date, self._date_tod = ep.date, ep.tod
        if ep.valid and ep.lat is not None and ep.lon is not None:
            mode = ep.mode if ep.mode in (2, 3) else None
            if mode is None:
                mode = 3 if ep.alt is not None else (self._gsa_mode if self._gsa_mode in (2, 3) else 2)
            out.append(
                Fix(
                    tb=ep.tb,
                    tod_ms=ep.tod,
                    utc_ms=self._utc(ep),
                    lat=round(ep.lat, 9),
                    lon=round(ep.lon, 9),
                    alt=ep.alt if mode == 3 else None,
                    mode=mode,
                    sats=ep.sats,
                    hdop=ep.hdop,
                    speed=ep.speed,
                    course=ep.course,
                )
            )
        elif ep.valid is False:
            out.append(NoFix(tb=ep.tb, tod_ms=ep.tod))

    def _utc(self, ep: _Epoch) -> int | None:
        if ep.tod is None:
            return None
        date, date_tod = (ep.date, ep.tod) if ep.date is not None else (self._date, self._date_tod)
        if date is None:
            return None
        if self._day_cache is not None and self._day_cache[0] == date:
            day_ms = self._day_cache[1]
        else:
            day_ms = calendar.timegm((*date, 0, 0, 0)) * 1000
            self._day_cache = (date, day_ms)
        if ep.date is None and ep.tod < date_tod - DAY_MS // 2:
            day_ms += DAY_MS  # the date we carry is from before midnight
        return day_ms + ep.tod

    def _learn(self, ep: _Epoch, closer: str | None) -> None:
        if closer is None:
            return
        if ep.types.count(closer) != 1:
            self._closers.clear()
            self._ender = None
            return
        self._closers.append(closer)
        del self._closers[:-3]
        if len(self._closers) == 3 and len(set(self._closers)) == 1:
            self._ender = closer
        elif self._ender is not None and closer != self._ender:
            self._ender = None

    def _gpsd_json(self, line: bytes, now: int) -> list[Event]:
        """gpsd's TPV reports (`gpspipe -w`), for a receiver shared through gpsd."""
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return [Rejected(Reason.MALFORMED, line[:64], "not JSON")]
        if not isinstance(obj, dict) or obj.get("class") != "TPV":
            self.ignored += 1
            return []
        try:
            mode = int(obj.get("mode", 0))
            lat, lon = obj.get("lat"), obj.get("lon")
            if mode < 2:
                return [NoFix(tb=now, tod_ms=None)]
            flat, flon = _num(lat), _num(lon)
            if flat is None or flon is None:
                return [Rejected(Reason.BAD_VALUE, line[:64], "TPV without a numeric position")]
            if not (-90 <= flat <= 90 and -180 <= flon <= 180):  # also refuses NaN
                return [Rejected(Reason.BAD_VALUE, line[:64], "position out of range")]
            utc = _iso_ms(obj.get("time"))
            alt = obj.get("altMSL", obj.get("alt"))
            return [
                Fix(
                    tb=now,
                    tod_ms=None if utc is None else utc % DAY_MS,
                    utc_ms=utc,
                    lat=flat,
                    lon=flon,
                    alt=float(alt) if isinstance(alt, int | float) and mode == 3 else None,
                    mode=3 if mode >= 3 else 2,
                    sats=None,
                    hdop=None,
                    speed=_num(obj.get("speed")),
                    course=_num(obj.get("track")),
                )
            ]
        except (TypeError, ValueError, OverflowError):
            return [Rejected(Reason.BAD_VALUE, line[:64], "TPV field of wrong type")]


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _iso_ms(v: object) -> int | None:
    if not isinstance(v, str) or len(v) < 20:
        return None
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(t.timestamp() * 1000)
