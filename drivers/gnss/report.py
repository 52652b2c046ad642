"""When to report a fix: by time, distance or heading change (sans-IO)."""

from __future__ import annotations

import math

from drivers.gnss.parse import Fix

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


class FixReporter:
    """Passes a fix when `min_interval_s` has elapsed, or when enabled distance or course
    triggers fire (a worker who starts running is reported at once)."""

    def __init__(self, *, min_interval_s: float, min_distance_m: float, min_course_change_deg: float) -> None:
        self._interval_ms = min_interval_s * 1000.0
        self._distance = min_distance_m
        self._course = min_course_change_deg
        self._last: Fix | None = None

    @property
    def min_interval_s(self) -> float:
        return self._interval_ms / 1000.0

    @min_interval_s.setter
    def min_interval_s(self, value: float) -> None:
        self._interval_ms = value * 1000.0

    def offer(self, fix: Fix) -> bool:
        last = self._last
        report = (
            last is None
            or fix.tb - last.tb >= self._interval_ms
            or (self._distance > 0 and distance_m(last.lat, last.lon, fix.lat, fix.lon) >= self._distance)
            or (
                self._course > 0
                and fix.course is not None
                and last.course is not None
                and abs((fix.course - last.course + 180.0) % 360.0 - 180.0) >= self._course
            )
        )
        if report:
            self._last = fix
        return report
