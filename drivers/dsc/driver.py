"""VHF radio DSC port: the shell around `DscParser`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from drivers.base import Emit, ShapedDriver
from drivers.dsc.parse import DSE_WAIT_MS, DscCall, DscParser
from drivers.incidents import IncidentShaper
from drivers.nmea0183 import Rejected
from floor.config import DeviceConfig


class DscDriver(ShapedDriver):
    """Distress alerts, relays and acknowledgements as `dsc.distress`; other calls as `dsc.call`."""

    kind = "dsc"

    def __init__(
        self,
        cfg: DeviceConfig,  # no keys of its own: the id and the source
        *,
        emit: Emit,
        room: Callable[[], Awaitable[None]] | None = None,
        tap: Callable[[str, bytes], None] | None = None,
    ) -> None:
        super().__init__(cfg.id, cfg.source, emit=emit, room=room, tap=tap)
        self._parser = DscParser()
        # A ship's distress is one incident however often its radio repeats it (every
        # few minutes) and however many stations relay it; each repeat of a routine
        # call is folded the same way. A source that floods is bounded, never believed more.
        self.calls = IncidentShaper(repeat_s=60.0, move_m=50.0)

    def _new_stream(self) -> None:
        self._parser = DscParser()

    def _ignored(self) -> int:
        return self._parser.ignored

    def _poll_after(self) -> float | None:
        # a call with the expansion flag waits briefly for its DSE, never longer
        if self._parser.waiting:
            return DSE_WAIT_MS / 1000 / 5
        return 1.0 if self.calls.pending(self.dev_id) else None

    def _parse(self, data: bytes, now: int) -> Sequence[DscCall | Rejected]:
        return self._parser.feed(data, now=now)

    def _poll(self, now: int) -> Sequence[DscCall | Rejected]:
        return self._parser.poll(now)

    def _held(self, now: int) -> Iterable[tuple[str, Mapping[str, Any]]]:
        return self.calls.due(self.dev_id, now)

    def _drain(self, now: int) -> None:
        self._handle(self._parser.flush())

    def _handle(self, events: Sequence[DscCall | Rejected]) -> None:
        for ev in events:
            self.counters.events += 1
            if isinstance(ev, Rejected):
                self._rejected(ev)
                continue
            d = ev.data
            kind = "dsc.distress" if ev.distress else "dsc.call"
            # who is in distress, and what was said about it (a cancel is a new state)
            key = (kind, d["mmsi"], d.get("call"), d.get("relay_of"), d.get("ack_of"), d.get("telecommand"))
            state = (d.get("nature"), d.get("cancel", False), d.get("format"), d.get("category"))
            for k, data in self.calls.offer(key, self.dev_id, kind, d, state=state, now=ev.tb):
                self._publish(k, data)
        self.counters.incidents = self.calls.snapshot()
