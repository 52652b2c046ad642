"""What every stream driver shares: the `Emit` it is handed and the read loop."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from drivers.counters import DriverCounters
from drivers.net_link import Link, open_link
from drivers.nmea0183 import Rejected
from edge.base.clock import Stamp, boottime_ms
from edge.base.config import Source
from edge.base.errors import DeviceGone, DeviceSilent
from edge.base.kinds import DeviceState

log = logging.getLogger(__name__)


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
        self, dev_id: str, source: Source, *, emit: Emit, room: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.dev_id = dev_id
        self._room = room  # backpressure: wait before reading more while the outbox is behind
        self.name = f"{self.kind}[{dev_id}]"
        self._source = source
        self._emit = emit
        self.counters = DriverCounters()

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

    def _refused_datagram(self, why: str, sender: str) -> None:
        """A UDP datagram turned away: from a sender not in `allow`, or in a flood."""
        n = self.counters.rejected[why] = self.counters.rejected[why] + 1
        if n == 1 or n % 1000 == 0:
            what = "a sender not in its allow list" if why == "source" else "a flood (queue full)"
            log.warning("%s: %d datagrams refused from %s (latest from %s)", self.name, n, what, sender)

    def _rejected(self, ev: Rejected) -> None:
        self.counters.rejected[ev.reason.value] += 1
        log.debug("%s: rejected %s %s: %r", self.name, ev.reason.value, ev.detail, ev.raw[:80])

    async def run(self) -> None:
        self._new_stream()
        ignored_before = self._ignored()
        try:
            async with open_link(self.name, self._source, self._refused_datagram) as link:
                self.counters.opened += 1
                self._opened(link)
                self._state(DeviceState.CONNECTED)
                while True:
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
                    self.counters.bytes += len(data)
                    self._feed(data, boottime_ms())
        except DeviceSilent:
            self.counters.silent += 1
            self._drain(boottime_ms())
            self._state(DeviceState.SILENT)
            raise
        except DeviceGone:
            self.counters.gone += 1
            self._drain(boottime_ms())
            self._state(DeviceState.DISCONNECTED)
            raise
        finally:
            self.counters.ignored += self._ignored() - ignored_before
