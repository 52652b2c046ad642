"""GNSS receiver on a serial port (or gpsd's JSON over TCP): the shell around `NmeaParser`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from drivers.base import Emit, StreamDriver
from drivers.gnss.parse import Event, Fix, NmeaParser
from drivers.gnss.report import FixReporter
from drivers.net_link import Link, TcpLink
from drivers.nmea0183 import Rejected
from floor.clock import Clock, boottime_ms

if TYPE_CHECKING:  # the part imports this driver when it builds one
    from drivers.gnss.part import GnssDevice


class GnssDriver(StreamDriver):
    """Reads one receiver; reports `gnss.fix` and feeds the gateway clock."""

    kind = "gnss"

    def __init__(
        self,
        cfg: GnssDevice,
        *,
        emit: Emit,
        clock: Clock,
        on_time: Callable[[int, int], None] | None = None,
        on_fix: Callable[[str, Fix], None] | None = None,
        room: Callable[[], Awaitable[None]] | None = None,
        tap: Callable[[str, bytes], None] | None = None,
    ) -> None:
        super().__init__(cfg.id, cfg.source, emit=emit, room=room, tap=tap)
        self.cfg = cfg
        self._clock = clock
        self._on_time = on_time if cfg.clock_source else None
        self._on_fix = on_fix
        self._reporter = FixReporter(
            min_interval_s=cfg.min_interval_s,
            min_distance_m=cfg.min_distance_m,
            min_course_change_deg=cfg.min_course_change_deg,
        )
        self._parser = NmeaParser()
        self.last_fix: Fix | None = None

    def _new_stream(self) -> None:
        self._parser = NmeaParser()

    def pace(self, positions_s: float | None) -> None:
        """In emergency posture a worker's position goes up at least every `positions_s`."""
        configured = self.cfg.min_interval_s
        self._reporter.min_interval_s = configured if positions_s is None else min(configured, positions_s)

    def snapshot(self) -> dict[str, Any]:
        """As every device's, with its latest fix (any receiver's, whatever its id)."""
        doc = super().snapshot()
        if self.last_fix is not None:
            doc["fix"] = {**self.last_fix.record(), "age_ms": max(0, boottime_ms() - self.last_fix.tb)}
        return doc

    def _opened(self, link: Link) -> None:
        if isinstance(link, TcpLink):
            # gpsd (gpsd.gitlab.io/gpsd/gpsd_json.html): ask for its JSON reports (TPV).
            link.write(b'?WATCH={"enable":true,"json":true};\n')

    def _ignored(self) -> int:
        return self._parser.ignored

    def _feed(self, data: bytes, now: int) -> None:
        self._handle(self._parser.feed(data, now=now))

    def _flush(self, now: int) -> None:
        self._handle(self._parser.flush())

    def _handle(self, events: list[Event]) -> None:
        for ev in events:
            self.counters.events += 1
            if isinstance(ev, Rejected):
                self._rejected(ev)
            elif isinstance(ev, Fix):
                self._fix(ev)

    def _fix(self, fix: Fix) -> None:
        if fix.utc_ms is not None and self._on_time is not None:
            self._on_time(fix.utc_ms, fix.tb)
        self.last_fix = fix
        if self._on_fix is not None:
            self._on_fix(self.dev_id, fix)
        if self._reporter.offer(fix):
            self.counters.published += 1
            self._emit("gnss.fix", self.dev_id, fix.record(), stamp=self._clock.stamp(fix.tb))
