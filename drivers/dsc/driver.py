"""VHF radio DSC port: the shell around `DscParser`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from drivers.base import Emit, StreamDriver
from drivers.dsc.parse import DSE_WAIT_MS, DscCall, DscParser
from drivers.nmea0183 import Rejected
from edge.base.config import DscDevice


class DscDriver(StreamDriver):
    """Distress alerts, relays and acknowledgements as `dsc.distress`; other calls as `dsc.call`."""

    kind = "dsc"

    def __init__(
        self, cfg: DscDevice, *, emit: Emit, room: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(cfg.id, cfg.source, emit=emit, room=room)
        self._parser = DscParser()

    def _new_stream(self) -> None:
        self._parser = DscParser()

    def _ignored(self) -> int:
        return self._parser.ignored

    def _poll_after(self) -> float | None:
        # a call with the expansion flag waits briefly for its DSE, never longer
        return DSE_WAIT_MS / 1000 / 5 if self._parser.waiting else None

    def _feed(self, data: bytes, now: int) -> None:
        self._handle(self._parser.feed(data, now=now))

    def _flush(self, now: int) -> None:
        self._handle(self._parser.poll(now))

    def _drain(self, now: int) -> None:
        self._handle(self._parser.flush())

    def _handle(self, events: Sequence[DscCall | Rejected]) -> None:
        for ev in events:
            self.counters.events += 1
            if isinstance(ev, Rejected):
                self._rejected(ev)
                continue
            self.counters.published += 1
            self._emit("dsc.distress" if ev.distress else "dsc.call", self.dev_id, ev.data)
