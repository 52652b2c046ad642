"""What every stream driver shares: the `Emit` it is handed and the read loop."""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from drivers.counters import DriverCounters
from drivers.net_link import Link, open_link
from drivers.nmea0183 import Rejected
from drivers.raw import RawView
from floor.clock import Stamp, boottime_ms
from floor.config import Source
from floor.errors import DeviceGone, DeviceSilent
from floor.kinds import DeviceState

log = logging.getLogger(__name__)

# A busy feed is read at most this often: what arrives meanwhile waits in the link's buffer
# (the kernel's, for a serial port or a socket) and is parsed in one go, one wake-up per
# read instead of one per sentence. An isolated sentence is read at once; the next read
# after it waits out the rest of this. A read that filled its buffer is followed by
# another at once: a fast feed is never held to a buffer's worth per interval.
COALESCE_S = 0.1


class Emit(Protocol):
    """Accept one reading; unbatched kinds get a future resolving with the committed seq."""

    def __call__(
        self, kind: str, src: str, data: Mapping[str, Any], *, stamp: Stamp | None = None
    ) -> asyncio.Future[int] | None: ...


class StreamDriver(abc.ABC):
    """A device that sends a byte stream (serial, TCP, UDP) to a sans-IO parser.

    `run()` is one lifetime of the link and returns only by raising (gone, silent,
    cancelled); `supervise` reopens it. The device's state changes are published as
    `device.state` (on change only, so a device that keeps failing does not spam).
    """

    kind = "device"

    def __init__(
        self,
        dev_id: str,
        source: Source,
        *,
        emit: Emit,
        room: Callable[[], Awaitable[None]] | None = None,
        tap: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.dev_id = dev_id
        self._room = room  # backpressure: wait before reading more while the outbox is behind
        self.name = f"{self.kind}[{dev_id}]"
        self._source = source
        self._emit = emit
        self.counters = DriverCounters()
        self._tap = tap  # hears the bytes as read (NMEA forwarding)
        self.raw = RawView()  # the last lines, while a technician looks

    def snapshot(self) -> dict[str, Any]:
        """Its entry in the status: its kind, state and counters (a kind may add more)."""
        return {"kind": self.kind, **self.counters.snapshot()}

    def pace(self, positions_s: float | None) -> None:  # noqa: B027 (optional: a kind with positions overrides it)
        """Emergency posture: positions at least this often (a kind that has none: nothing)."""

    def _publish(self, kind: str, data: Mapping[str, Any]) -> None:
        self.counters.published += 1
        self._emit(kind, self.dev_id, data)

    def _state(self, state: DeviceState) -> None:
        if state != self.counters.state:
            self.counters.state = state
            self._emit("device.state", self.dev_id, {"state": state})

    @abc.abstractmethod
    def _new_stream(self) -> None:
        """Start a fresh parser: a reopened link is a new byte stream."""

    @abc.abstractmethod
    def _feed(self, data: bytes, now: int) -> None:
        """Parse bytes and act on the events."""

    @abc.abstractmethod
    def _flush(self, now: int) -> None:
        """Time passed without bytes (see `_poll_after`): report what is due."""

    def _opened(self, link: Link) -> None:  # noqa: B027 (an optional hook, not an abstract one)
        """The link is open: send whatever the device needs to start talking (default: nothing)."""

    def _drain(self, now: int) -> None:
        """The link is going away: report everything pending, whatever its age."""
        self._flush(now)

    def _poll_after(self) -> float | None:
        """Seconds after which `_flush` should run even without new bytes, or None."""
        return None

    def _ignored(self) -> int:
        return 0

    def _refused_datagram(self, why: str, sender: str, count: int = 1) -> None:
        """UDP datagrams turned away: from a sender not in `allow`, or lost in a flood."""
        before = self.counters.rejected[why]
        n = self.counters.rejected[why] = before + count
        if before == 0 or n // 1000 > before // 1000:
            what = (
                "a sender not in its allow list" if why == "source" else "a flood (the socket's buffer full)"
            )
            log.warning("%s: %d datagrams refused from %s (latest from %s)", self.name, n, what, sender)

    def _last_read(self, link: Link) -> None:
        """What the link holds already (read without waiting), fed and reported."""
        try:
            data = link.read_now()
        except (DeviceGone, OSError):
            return
        if data:
            self.counters.bytes += len(data)
            self._feed(data, boottime_ms())
        self._drain(boottime_ms())

    def _rejected(self, ev: Rejected) -> None:
        self.counters.rejected[ev.reason.value] += 1
        self.raw.refused(ev.raw, ev.reason.value, ev.detail)
        log.debug("%s: rejected %s %s: %r", self.name, ev.reason.value, ev.detail, ev.raw[:80])

    async def _read_loop(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        next_read = 0.0
        while True:
            if (pause := next_read - loop.time()) > 0:
                await asyncio.sleep(pause)
            if self._room is not None:
                await self._room()
            wait = self._poll_after()
            if wait is None:
                data = await link.read()
            else:
                try:
                    data = await asyncio.wait_for(link.read(), wait)
                except TimeoutError:
                    self._flush(boottime_ms())
                    continue
            next_read = loop.time() + COALESCE_S if link.drained else 0.0
            self.counters.bytes += len(data)
            self.counters.last_ms = time.time_ns() // 1_000_000
            if self._tap is not None:
                self._tap(self.dev_id, data)
            self.raw.heard(data)
            self._feed(data, boottime_ms())

    def _failed(self, exc: Exception) -> None:
        """Why it is down, for the status, the page and `gridedge status` (until it is back)."""
        self.counters.last_error = str(exc)
        self.counters.failures += 1

    async def run(self) -> None:
        self._new_stream()
        ignored_before = self._ignored()
        try:
            async with open_link(self.name, self._source, self._refused_datagram) as link:
                self.counters.opened += 1
                self.counters.last_error, self.counters.failures = None, 0
                self._opened(link)
                self._state(DeviceState.CONNECTED)
                try:
                    await self._read_loop(link)
                except asyncio.CancelledError:
                    # stopping, wherever it waited: what already reached the link is parsed, not dropped
                    self._last_read(link)
                    raise
        except DeviceSilent as exc:
            self.counters.silent += 1
            self._failed(exc)
            self._drain(boottime_ms())
            self._state(DeviceState.SILENT)
            raise
        except DeviceGone as exc:
            self.counters.gone += 1
            self._failed(exc)
            self._drain(boottime_ms())
            self._state(DeviceState.DISCONNECTED)
            raise
        finally:
            self.counters.ignored += self._ignored() - ignored_before


class ShapedDriver(StreamDriver):
    """A receiver whose reports pass a shaper that may hold some back (a beacon's
    repeats, a radio's repeated calls): what it holds is released when due, after
    every read and on every poll without bytes."""

    @abc.abstractmethod
    def _parse(self, data: bytes, now: int) -> Sequence[Any]:
        """The parser's events for these bytes."""

    @abc.abstractmethod
    def _poll(self, now: int) -> Sequence[Any]:
        """The parser's events that time alone releases (expired fragments, a held call)."""

    @abc.abstractmethod
    def _handle(self, events: Sequence[Any]) -> None:
        """Act on the parser's events."""

    @abc.abstractmethod
    def _held(self, now: int) -> Iterable[tuple[str, Mapping[str, Any]]]:
        """What the shaper releases now."""

    def _feed(self, data: bytes, now: int) -> None:
        self._handle(self._parse(data, now))
        self._due(now)

    def _flush(self, now: int) -> None:
        self._handle(self._poll(now))
        self._due(now)

    def _due(self, now: int) -> None:
        for kind, data in self._held(now):
            self._publish(kind, data)
