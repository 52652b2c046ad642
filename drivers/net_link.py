"""TCP and UDP byte sources with the same shape as `SerialLink` (AIS feeds speak all three)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
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


Refused = Callable[[str, str], None]  # (why: "source" or "flood", sender address)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_KNOWN_SENDERS = 256  # verdicts remembered per listener (a spoofing flood only evicts)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, allow: tuple[Network, ...], refused: Refused | None) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED_DATAGRAMS)
        self._allow = allow
        self._refused = refused
        self._verdict: dict[str, bool] = {}

    def _allowed(self, host: str) -> bool:
        if not self._allow:
            return True
        ok = self._verdict.get(host)
        if ok is None:
            try:
                ip = ipaddress.ip_address(host.partition("%")[0])
            except ValueError:
                ip = None
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            ok = ip is not None and any(ip.version == n.version and ip in n for n in self._allow)
            if len(self._verdict) >= MAX_KNOWN_SENDERS:
                self._verdict.clear()
            self._verdict[host] = ok
        return ok

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        host = str(addr[0])
        if not self._allowed(host):
            if self._refused is not None:
                self._refused("source", host)
            return
        try:
            # one datagram may end without a newline; frame it as a line of its own
            self.queue.put_nowait(data if data.endswith(b"\n") else data + b"\r\n")
        except asyncio.QueueFull:
            if self._refused is not None:
                self._refused("flood", host)


class UdpLink:
    """A UDP listener (receivers broadcast NMEA on port 10110 and similar)."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        silence_s: float,
        *,
        allow: tuple[Network, ...] = (),
        refused: Refused | None = None,
    ) -> None:
        self.name = name
        self._addr = (host, port)
        self._silence = silence_s
        self._transport: asyncio.DatagramTransport | None = None
        self._proto = _Datagrams(allow, refused)

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


def open_link(name: str, source: Source, refused: Refused | None = None) -> Link:
    """The link for a device's configured source (not yet opened: use `async with`);
    `refused` hears of each datagram a UDP listener turned away, and why."""
    if isinstance(source, SerialPort):
        return SerialLink(name, source)
    if source.scheme == "tcp":
        return TcpLink(name, source.host, source.port, source.silence_s)
    return UdpLink(name, source.host, source.port, source.silence_s, allow=source.allow, refused=refused)
