"""TCP and UDP byte sources with the same shape as `SerialLink` (AIS feeds speak all three)."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from drivers.serial_link import SerialLink
from drivers.stream_link import StreamLink
from edge.base.config import SerialPort, Source
from edge.base.errors import DeviceGone, DeviceSilent

log = logging.getLogger(__name__)

MAX_QUEUED_DATAGRAMS = 1024  # a flood is dropped at the socket, not buffered without bound


class TcpLink(StreamLink):
    """A TCP client (an AIS aggregator, a receiver's network port, gpsd)."""

    READ_SIZE = 65536
    EOF = "connection closed by peer"

    def __init__(self, name: str, host: str, port: int, silence_s: float) -> None:
        super().__init__(name, silence_s)
        self._addr = (host, port)

    async def __aenter__(self) -> TcpLink:
        try:
            async with asyncio.timeout(10):
                self._reader, self._writer = await asyncio.open_connection(*self._addr)
        except (OSError, TimeoutError) as exc:
            raise DeviceGone(self.name, f"cannot connect to {self._addr[0]}:{self._addr[1]}: {exc}") from exc
        log.info("%s: connected to %s:%d", self.name, *self._addr)
        return self


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED_DATAGRAMS)
        self.dropped = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            # one datagram may end without a newline; frame it as a line of its own
            self.queue.put_nowait(data if data.endswith(b"\n") else data + b"\r\n")
        except asyncio.QueueFull:
            self.dropped += 1


class UdpLink:
    """A UDP listener (receivers broadcast NMEA on port 10110 and similar)."""

    def __init__(self, name: str, host: str, port: int, silence_s: float) -> None:
        self.name = name
        self._addr = (host, port)
        self._silence = silence_s
        self._transport: asyncio.DatagramTransport | None = None
        self._proto = _Datagrams()

    async def __aenter__(self) -> UdpLink:
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: self._proto, local_addr=self._addr
            )
        except OSError as exc:
            raise DeviceGone(
                self.name, f"cannot listen on udp {self._addr[0]}:{self._addr[1]}: {exc}"
            ) from exc
        log.info("%s: listening on udp %s:%d", self.name, *self._addr)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def local_port(self) -> int:
        if self._transport is None:
            return self._addr[1]
        port: int = self._transport.get_extra_info("sockname")[1]
        return port

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(self._silence):
                return await self._proto.queue.get()
        except TimeoutError:
            raise DeviceSilent(self.name, self._silence) from None


Link = SerialLink | TcpLink | UdpLink


def open_link(name: str, source: Source) -> Link:
    """The link for a device's configured source (not yet opened: use `async with`)."""
    if isinstance(source, SerialPort):
        return SerialLink(name, source)
    if source.scheme == "tcp":
        return TcpLink(name, source.host, source.port, source.silence_s)
    return UdpLink(name, source.host, source.port, source.silence_s)
