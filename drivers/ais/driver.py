"""AIS receiver on serial, TCP or UDP: the shell around `AisParser`, feeding the station tracker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from drivers.ais.parse import AisParser, AisReport
from drivers.ais.tracker import VesselTracker
from drivers.base import Emit, StreamDriver
from drivers.nmea0183 import Rejected
from edge.base.config import AisDevice


class AisDriver(StreamDriver):
    """One receiver; every receiver of a station shares the `VesselTracker`."""

    kind = "ais"

    def __init__(
        self,
        cfg: AisDevice,
        *,
        emit: Emit,
        tracker: VesselTracker,
        room: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(cfg.id, cfg.source, emit=emit, room=room)
        self._tracker = tracker
        self._parser = AisParser(seen=tracker.seen)
        self.on_report: Callable[[str, AisReport], None] | None = None  # local tools (edge/feeds.py)

    def _new_stream(self) -> None:
        self._parser = AisParser(seen=self._tracker.seen)

    def _ignored(self) -> int:
        return self._parser.ignored

    def _poll_after(self) -> float | None:
        # beacon reports held back by their incident's gap or this receiver's budget
        return 1.0 if self._tracker.pending(self.dev_id) else None

    def _feed(self, data: bytes, now: int) -> None:
        self._handle(self._parser.feed(data, now=now))
        self._due(now)

    def _flush(self, now: int) -> None:
        self._handle(self._parser.expire(now))
        self._due(now)

    def _due(self, now: int) -> None:
        for kind, data in self._tracker.due(self.dev_id, now):
            self.counters.published += 1
            self._emit(kind, self.dev_id, data)

    def _handle(self, events: Sequence[AisReport | Rejected]) -> None:
        for ev in events:
            self.counters.events += 1
            if isinstance(ev, Rejected):
                self._rejected(ev)
                continue
            if self.on_report is not None:
                self.on_report(self.dev_id, ev)
            for kind, data in self._tracker.offer(ev, self.dev_id, deduped=True):
                self.counters.published += 1
                self._emit(kind, self.dev_id, data)
