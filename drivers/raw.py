"""A device's last lines as it sent them, with the ones the gateway refused marked: what
gpsmon or Signal K's data browser show a technician. Kept only while someone is looking
(a view asks, and keeps it on for a few minutes), so a station nobody looks at pays
nothing for it."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from drivers.nmea0183 import LineFramer

KEEP = 60  # lines kept per device
WATCH_S = 300.0  # kept this long after the last view


class RawView:
    def __init__(self) -> None:
        self._lines: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._framer = LineFramer()
        self._until = 0.0

    @property
    def on(self) -> bool:
        return time.monotonic() < self._until

    def heard(self, data: bytes) -> None:
        """The bytes the device sent, as read."""
        if not self.on:
            return
        now = time.time_ns() // 1_000_000
        for line in self._framer.feed(data):
            if isinstance(line, bytes):
                self._lines.append({"t": now, "line": line.decode("ascii", "replace")})

    def refused(self, raw: bytes, reason: str, detail: str) -> None:
        """A line (or what was left of one) the driver refused, and why."""
        if not self.on:
            return
        text = raw.decode("ascii", "replace")
        for entry in reversed(self._lines):
            if entry["line"] == text or (text and entry["line"].startswith(text)):
                entry |= {"rejected": reason, "detail": detail[:200]}
                return
        self._lines.append(
            {"t": time.time_ns() // 1_000_000, "line": text, "rejected": reason, "detail": detail[:200]}
        )

    def view(self) -> list[dict[str, Any]]:
        """The lines kept, oldest first; looking keeps the view on for WATCH_S more."""
        if not self.on:
            self._framer = LineFramer()  # what came while nobody looked is not half a line
        self._until = time.monotonic() + WATCH_S
        return list(self._lines)
