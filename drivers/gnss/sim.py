"""A simulated GNSS receiver: NMEA 0183 sentences for a synthetic walk (demo, tests, bench)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from drivers.nmea0183 import sentence

__all__ = ["SKY", "epoch_sentences", "sentence", "sky_sentences", "walk"]

# The simulated sky: (talker, satellite as that talker numbers it, elevation, azimuth, SNR)
SKY = (
    ("GP", 1, 62, 45, 44), ("GP", 2, 35, 120, 41), ("GP", 3, 20, 200, 38), ("GP", 4, 48, 290, 40),
    ("GP", 5, 12, 330, 31), ("GP", 6, 75, 10, 46), ("GP", 9, 5, 80, 0),
    ("GL", 70, 40, 150, 36), ("GL", 71, 22, 240, 33),
    ("GB", 7, 55, 100, 42), ("GB", 10, 30, 260, 37),
)  # fmt: skip


def _ddmm(value: float, deg_digits: int) -> tuple[str, str]:
    hemi_pos, hemi_neg = ("N", "S") if deg_digits == 2 else ("E", "W")
    v = abs(value)
    deg = int(v)
    minutes = (v - deg) * 60
    return f"{deg:0{deg_digits}d}{minutes:08.5f}", hemi_pos if value >= 0 else hemi_neg


def epoch_sentences(
    utc: float,
    lat: float,
    lon: float,
    *,
    alt: float = 12.0,
    speed_mps: float = 1.4,
    course: float = 90.0,
    talker: str = "GN",
    sats: int = 12,
    hdop: float = 0.8,
) -> bytes:
    """One navigation epoch: RMC, GGA, GSA, as a multi-constellation receiver sends it."""
    t = time.gmtime(utc)
    hhmmss = f"{t.tm_hour:02d}{t.tm_min:02d}{t.tm_sec:02d}.{int((utc % 1) * 100):02d}"
    ddmmyy = f"{t.tm_mday:02d}{t.tm_mon:02d}{t.tm_year % 100:02d}"
    la, ns = _ddmm(lat, 2)
    lo, ew = _ddmm(lon, 3)
    knots = speed_mps / (1852 / 3600)
    return (
        sentence(f"{talker}RMC,{hhmmss},A,{la},{ns},{lo},{ew},{knots:.2f},{course:.1f},{ddmmyy},,,A,V")
        + sentence(f"{talker}GGA,{hhmmss},{la},{ns},{lo},{ew},1,{sats:02d},{hdop:.1f},{alt:.1f},M,-5.0,M,,")
        + sentence(f"{talker}GSA,A,3,01,02,03,04,05,06,,,,,,,1.5,{hdop:.1f},1.2,1")
    )


def sky_sentences() -> bytes:
    """GSV cycles of SKY (per talker, four satellites a sentence), as a receiver sends
    them once a second; epoch_sentences' GSA says GPS 1-6 are used."""
    out = b""
    for talker in dict.fromkeys(t for t, *_ in SKY):
        sats = [(n, el, az, ss) for t, n, el, az, ss in SKY if t == talker]
        total = -(-len(sats) // 4)
        for i in range(total):
            chunk = sats[i * 4 : i * 4 + 4]
            body = ",".join(f"{n:02d},{el:02d},{az:03d},{ss:02d}" if ss else f"{n:02d},{el:02d},{az:03d},"
                            for n, el, az, ss in chunk)  # fmt: skip
            out += sentence(f"{talker}GSV,{total},{i + 1},{len(sats):02d},{body}")
    return out


def walk(
    *,
    start_utc: float,
    lat: float = 21.9186,
    lon: float = 112.7936,
    hz: float = 1.0,
    speed_mps: float = 1.4,
) -> Iterator[bytes]:
    """An endless walk round a 150 m circle (default: Taishan, Guangdong), one epoch per item."""
    radius_m = 150.0
    step = 1.0 / hz
    i = 0
    while True:
        angle = (speed_mps * i * step) / radius_m
        dlat = radius_m * math.cos(angle) / 111_320.0
        dlon = radius_m * math.sin(angle) / (111_320.0 * math.cos(math.radians(lat)))
        course = (math.degrees(angle) + 90.0) % 360.0
        yield epoch_sentences(
            start_utc + i * step, lat + dlat, lon + dlon, speed_mps=speed_mps, course=course
        )
        i += 1
