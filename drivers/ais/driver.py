"""AIS receiver on serial, TCP or UDP: the shell around `AisParser`, feeding the station tracker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from drivers.ais.parse import AisParser, AisReport
from drivers.ais.tracker import VesselTracker
from drivers.base import Emit, ShapedDriver
from drivers.nmea0183 import Rejected
from floor.config import DeviceConfig


class AisDriver(ShapedDriver):
    """One receiver; every receiver of a station shares the `VesselTracker`."""

    kind = "ais"

    def __init__(
        self,
        cfg: DeviceConfig,  # no keys of its own: the id and the source
        *,
        emit: Emit,
        tracker: VesselTracker,
        room: Callable[[], Awaitable[None]] | None = None,
        tap: Callable[[str, bytes], None] | None = None,
        on_report: Callable[[str, AisReport], None] | None = None,
    ) -> None:
        super().__init__(cfg.id, cfg.source, emit=emit, room=room, tap=tap)
        self._tracker = tracker
        self._parser = AisParser(seen=tracker.seen)
        self._on_report = on_report  # local tools (edge/feeds.py)

    def _new_stream(self) -> None:
        self._parser = AisParser(seen=self._tracker.seen)

    def _ignored(self) -> int:
        return self._parser.ignored

    def _poll_after(self) -> float | None:
        # beacon reports held back by their incident's gap or this receiver's budget
        return 1.0 if self._tracker.pending(self.dev_id) else None

    def _parse(self, data: bytes, now: int) -> Sequence[AisReport | Rejected]:
        return self._parser.feed(data, now=now)

    def _poll(self, now: int) -> Sequence[AisReport | Rejected]:
        return self._parser.expire(now)

    def _held(self, now: int) -> Iterable[tuple[str, Mapping[str, Any]]]:
        return self._tracker.due(self.dev_id, now)

    def _handle(self, events: Sequence[AisReport | Rejected]) -> None:
        for ev in events:
            self.counters.events += 1
            if isinstance(ev, Rejected):
                self._rejected(ev)
                continue
            if self._on_report is not None:
                self._on_report(self.dev_id, ev)
            for kind, data in self._tracker.offer(ev, self.dev_id, deduped=True):
                self._publish(kind, data)
