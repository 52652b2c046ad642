"""A GNSS receiver's sky as gpsd reports it in SKY: the satellites in view (GSV), those
used in the fix and the dilutions of precision (GSA), per device.

Only the local-tools feed needs it, so it reads the sentences the feed is tapped with,
and only while someone is connected: the gateway's own fixes never pay for it.
Satellites are numbered as gpsd numbers them (its `PRN`, with `gnssid` and `svid`):
GPS 1-32, SBAS 33-64 (as NMEA numbers them), GLONASS 65-96, Galileo 301-336, BeiDou 401-463, QZSS 193-199,
so two constellations' satellite 5 are never one satellite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from drivers.nmea0183 import Sentence

GPS, SBAS, GALILEO, BEIDOU, QZSS, GLONASS = 0, 1, 2, 3, 5, 6
# PQ: Quectel receivers send BeiDou's GSV as $PQGSV
TALKERS = {
    "GP": GPS,
    "GL": GLONASS,
    "GA": GALILEO,
    "GB": BEIDOU,
    "BD": BEIDOU,
    "PQ": BEIDOU,
    "GQ": QZSS,
    "QZ": QZSS,
}
SYSTEM_IDS = {1: GPS, 2: GLONASS, 3: GALILEO, 4: BEIDOU, 5: QZSS}  # GSA's field 18 (NMEA 4.10)
MAX_SATS = 128  # a receiver claiming more in view is not believed beyond this
GSV = frozenset({"GSV", "QGSV"})  # QGSV: Quectel's $PQGSV, read as talker P
SKY_TYPES = GSV | {"GSA"}
STALE_S = 10.0  # a GSV cycle not repeated for this long no longer counts


# (gnssid, first PRN gpsd gives it, svids, the offset some receivers add to the svid)
_NUMBERING = {
    GLONASS: (GLONASS, 65, 32, 64),
    GALILEO: (GALILEO, 301, 36, 100),
    BEIDOU: (BEIDOU, 401, 63, 200),
    QZSS: (QZSS, 193, 10, 192),
}
# a GN or GP talker's numbers, by NMEA 2.3's ranges: (lowest, highest, gnssid, PRN - n, svid - n)
_RANGES = (
    (1, 32, GPS, 0, 0),
    (33, 64, SBAS, 0, 87),  # gpsd keeps NMEA's number as the PRN
    (65, 96, GLONASS, 0, -64),
    (193, 199, QZSS, 0, -192),
    (201, 263, BEIDOU, 200, -200),  # BeiDou, from receivers that give it no talker of its own
)


def satellite(constellation: int | None, n: int) -> tuple[int, int, int] | None:
    """(PRN, gnssid, svid) for satellite `n` as a talker of `constellation` numbers it
    (None: a GN talker); None when it cannot be one."""
    numbering = _NUMBERING.get(constellation) if constellation is not None else None
    if numbering is None:  # GPS's talker or GN: the ranges say which constellation
        for lo, hi, gnssid, to_prn, to_svid in _RANGES:
            if lo <= n <= hi:
                return n + to_prn, gnssid, n + to_svid
        return None
    gnssid, first, count, offset = numbering
    svid = n - offset if n > offset else n
    return (first + svid - 1, gnssid, svid) if 1 <= svid <= count else None


def _int(s: str) -> int | None:
    """An empty field is no value; anything else that is not a number makes the sentence
    untrustworthy (ValueError: it is ignored whole)."""
    if not s:
        return None
    if not s.isdigit():
        raise ValueError(s)
    return int(s)


def _dop(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return v if 0.0 < v < 100.0 else None


def _satellites(constellation: int | None, f: tuple[str, ...]) -> list[dict[str, Any]]:
    """The satellites one GSV sentence lists (ValueError: a field that is no number)."""
    out = []
    for i in range(3, len(f) - 3, 4):
        n = _int(f[i])
        ids = satellite(constellation, n) if n is not None else None
        el, az, ss = _int(f[i + 1].removeprefix("-")), _int(f[i + 2]), _int(f[i + 3])
        if ids is None:
            continue
        prn, gnssid, svid = ids
        sat: dict[str, Any] = {"PRN": prn, "gnssid": gnssid, "svid": svid}
        if el is not None and az is not None:
            sat["el"] = float(-el if f[i + 1].startswith("-") else el)
            sat["az"] = float(az)
        if ss is not None:
            sat["ss"] = float(ss)
        out.append(sat)
    return out


@dataclass
class Sky:
    """One device's sky, as its last GSV cycles and GSA sentences said. A receiver
    tracking several signals of a satellite (L1 and L5) sends a GSV cycle per signal; the
    satellite is one entry here (gpsd lists one per signal)."""

    cycles: dict[tuple[str, str], tuple[float, dict[int, dict[str, Any]]]] = field(default_factory=dict)
    partial: dict[str, tuple[str, dict[int, dict[str, Any]]]] = field(default_factory=dict)  # by talker
    used: dict[int, set[int]] = field(default_factory=dict)  # gnssid -> PRNs used
    dops: dict[str, float] = field(default_factory=dict)

    def sentence(self, s: Sentence, now: float | None = None) -> None:
        try:
            if s.type in GSV:
                self._gsv(s, time.monotonic() if now is None else now)
            elif s.type == "GSA":
                self._gsa(s)
        except (IndexError, ValueError):
            return  # a sentence that is not what its type says: the sky stays as it was

    def _gsv(self, s: Sentence, now: float) -> None:
        f = s.fields
        total, num = _int(f[0]), _int(f[1])
        if total is None or num is None or not 1 <= num <= total <= 16:
            return
        talker = "PQ" if s.type == "QGSV" else s.talker
        found = _satellites(TALKERS.get(talker), f)  # all of it read before anything changes
        if num == 1:
            signal = f[-1] if (len(f) - 3) % 4 == 1 else ""  # NMEA 4.10's signal id
            self.partial[talker] = (signal, {})
        if talker not in self.partial:
            return  # the middle of a cycle whose start was missed
        signal, sats = self.partial[talker]
        for sat in found:
            if len(sats) < MAX_SATS:
                sats[sat["PRN"]] = sat
        if num == total:
            self.cycles[(talker, signal)] = (now, self.partial.pop(talker)[1])
            if len(self.cycles) > 64:  # talkers and signals a receiver could not have
                del self.cycles[min(self.cycles, key=lambda k: self.cycles[k][0])]

    def _gsa(self, s: Sentence) -> None:
        f = s.fields
        # NMEA 4.10's system id; some receivers put something else there (a fourth DOP)
        system = SYSTEM_IDS.get(int(f[17])) if len(f) > 17 and f[17].isdigit() else None
        constellation = TALKERS.get(s.talker, system)
        by_gnss: dict[int, set[int]] = {}
        for n in f[2:14]:
            x = _int(n)
            ids = satellite(constellation, x) if x is not None else None
            if ids is not None:
                by_gnss.setdefault(ids[1], set()).add(ids[0])
        if f[1] == "1":  # no fix: nothing is used, whatever it lists
            by_gnss = {}
            for gnssid in [constellation] if constellation is not None else list(self.used):
                self.used[gnssid] = set()
        self.used.update(by_gnss)  # each constellation's GSA replaces what it said before
        for name, i in (("pdop", 14), ("hdop", 15), ("vdop", 16)):
            if len(f) > i and (v := _dop(f[i])) is not None:
                self.dops[name] = v

    def report(self, device: str, now: float | None = None) -> dict[str, Any]:
        """gpsd's SKY object for the device (cycles older than STALE_S left out: a
        constellation the receiver stopped reporting is no longer in view)."""
        now = time.monotonic() if now is None else now
        used = set().union(*self.used.values()) if self.used else set()
        merged: dict[int, dict[str, Any]] = {}
        for key in sorted(self.cycles):
            at, cycle = self.cycles[key]
            if now - at > STALE_S:
                continue
            for prn, sat in cycle.items():  # the first signal's figures, the others' filling in
                merged[prn] = sat | merged[prn] if prn in merged else sat
        sats = [merged[prn] | {"used": prn in used} for prn in sorted(merged)]
        out: dict[str, Any] = {"class": "SKY", "device": device}
        out |= self.dops
        out["nSat"] = len(sats)
        out["uSat"] = sum(1 for sat in sats if sat["used"])
        out["satellites"] = sats
        return out
