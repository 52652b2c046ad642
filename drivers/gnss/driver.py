"""GNSS receiver on a serial port: the thin async shell around `NmeaParser`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from drivers.base import Emit
from drivers.counters import DriverCounters
from drivers.gnss.parse import Fix, NmeaParser, NoFix
from drivers.gnss.report import FixReporter
from drivers.nmea0183 import Rejected
from drivers.serial_link import SerialLink
from edge.clock import Clock, boottime_ms
from edge.config import GnssDevice
from edge.errors import DeviceGone, DeviceSilent

log = logging.getLogger(__name__)


class GnssDriver:
    """Reads one receiver; reports `gnss.fix` and feeds the gateway clock."""

    def __init__(
        self,
        cfg: GnssDevice,
        *,
        emit: Emit,
        clock: Clock,
        on_time: Callable[[int, int], None] | None = None,
        on_fix: Callable[[str, Fix], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = f"gnss[{cfg.id}]"
        self._emit = emit
        self._clock = clock
        self._on_time = on_time if cfg.clock_source else None
        self._on_fix = on_fix
        self._reporter = FixReporter(
            min_interval_s=cfg.min_interval_s,
            min_distance_m=cfg.min_distance_m,
            min_course_change_deg=cfg.min_course_change_deg,
        )
        self.counters = DriverCounters()
        self.last_fix: Fix | None = None

    def _state(self, state: str, **extra: object) -> None:
        if state != self.counters.state:
            self.counters.state = state
            self._emit("device.state", self.cfg.id, {"state": state, **extra})

    async def run(self) -> None:
        """One lifetime of the port: returns only by raising (gone, silent, cancelled)."""
        parser = NmeaParser()  # a reopened port starts a new byte stream
        try:
            async with SerialLink(self.name, self.cfg.serial) as link:
                self.counters.opened += 1
                self._state("connected")
                while True:
                    data = await link.read()
                    self.counters.bytes += len(data)
                    self._handle(parser.feed(data, now=boottime_ms()))
        except DeviceSilent:
            self.counters.silent += 1
            self._handle(parser.flush())
            self._state("silent")
            raise
        except DeviceGone:
            self.counters.gone += 1
            self._state("disconnected")
            raise
        finally:
            self.counters.ignored += parser.ignored

    def _handle(self, events: list[Fix | NoFix | Rejected]) -> None:
        for ev in events:
            self.counters.events += 1
            if isinstance(ev, Rejected):
                self.counters.rejected[ev.reason.value] += 1
                log.debug("%s: rejected %s: %r", self.name, ev.reason.value, ev.raw[:80])
            elif isinstance(ev, Fix):
                self._fix(ev)

    def _fix(self, fix: Fix) -> None:
        if fix.utc_ms is not None and self._on_time is not None:
            self._on_time(fix.utc_ms, fix.tb)
        self.last_fix = fix
        if self._on_fix is not None:
            self._on_fix(self.cfg.id, fix)
        if self._reporter.offer(fix):
            self.counters.published += 1
            self._emit("gnss.fix", self.cfg.id, fix.record(), stamp=self._clock.stamp(fix.tb))
