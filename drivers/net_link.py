"""TCP and UDP byte sources with the same shape as `SerialLink` (AIS feeds speak all three)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from types import TracebackType

from drivers.serial_link import SerialLink
from drivers.stream_link import StreamLink
from floor.config import SerialPort, Source
from floor.errors import DeviceGone, DeviceSilent

log = logging.getLogger(__name__)


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


Refused = Callable[[str, str, int], None]  # (why: "source" or "flood", sender address, how many)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_KNOWN_SENDERS = 256  # verdicts remembered per listener (a spoofing flood only evicts)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: datagrams the kernel dropped, per read
_OVFL = struct.Struct("=I")


class _Senders:
    """Which senders a listener takes (`allow`), remembered per address."""

    def __init__(self, allow: tuple[Network, ...]) -> None:
        self._allow = allow
        self._verdict: dict[str, bool] = {}

    def allowed(self, host: str) -> bool:
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


class UdpLink:
    """A UDP listener (receivers broadcast NMEA on port 10110 and similar).

    A raw non-blocking socket, drained a burst at a time: every datagram waiting is read
    in one go (the kernel's buffer holds them meanwhile), so a busy feed costs one wake-up
    per read of the driver, not one per datagram. Datagrams the kernel had to drop (its
    buffer full: a flood) are counted from SO_RXQ_OVFL, never silent."""

    MAX_BATCH = 1024  # datagrams per read, at most (bounded memory and time per read)

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
        self._senders = _Senders(allow)
        self._refused = refused
        self._sock: socket.socket | None = None
        self._dropped = 0  # the kernel's running count of dropped datagrams
        self.drained = True  # the last read took every datagram there was

    async def __aenter__(self) -> UdpLink:
        host, port = self._addr
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(OSError):  # not Linux: floods are then not counted
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise DeviceGone(self.name, f"cannot listen on udp {host}:{port}: {exc}") from exc
        self._sock = sock
        log.info("%s: listening on udp %s:%d", self.name, host, port)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def local_port(self) -> int:
        if self._sock is None:
            return self._addr[1]
        port: int = self._sock.getsockname()[1]
        return port

    def _drain(self) -> list[bytes]:
        sock = self._sock
        if sock is None:
            raise DeviceGone(self.name, "not open")
        out: list[bytes] = []
        space = socket.CMSG_SPACE(_OVFL.size)
        for _ in range(self.MAX_BATCH):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(65535, space)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                raise DeviceGone(self.name, f"udp: {exc}") from exc
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= _OVFL.size:
                    (total,) = _OVFL.unpack_from(value)
                    if total > self._dropped and self._refused is not None:
                        self._refused("flood", "(dropped by the kernel)", total - self._dropped)
                    self._dropped = total
            host = str(addr[0])
            if not self._senders.allowed(host):
                if self._refused is not None:
                    self._refused("source", host, 1)
                continue
            # one datagram may end without a newline; frame it as a line of its own
            out.append(data if data.endswith(b"\n") else data + b"\r\n")
        return out

    async def _readable(self) -> None:
        if self._sock is None:
            raise DeviceGone(self.name, "not open")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    def read_now(self) -> bytes:
        """Every datagram waiting, without waiting for one (a stop's last read)."""
        return b"".join(self._drain())

    async def read(self) -> bytes:
        """Every datagram waiting (at least one), as lines."""
        chunks = self._drain()
        while not chunks:
            try:
                async with asyncio.timeout(self._silence):
                    await self._readable()
            except TimeoutError:
                raise DeviceSilent(self.name, self._silence) from None
            chunks = self._drain()
        self.drained = len(chunks) < self.MAX_BATCH
        return b"".join(chunks)


Link = SerialLink | TcpLink | UdpLink


def open_link(name: str, source: Source, refused: Refused | None = None) -> Link:
    """The link for a device's configured source (not yet opened: use `async with`);
    `refused` hears of each datagram a UDP listener turned away, and why."""
    if isinstance(source, SerialPort):
        return SerialLink(name, source)
    if source.scheme == "tcp":
        return TcpLink(name, source.host, source.port, source.silence_s)
    return UdpLink(name, source.host, source.port, source.silence_s, allow=source.allow, refused=refused)
