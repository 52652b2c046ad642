"""What every listener of the gateway holds to: a cap on connections, a cap per peer, and
deadlines, so nobody who can open sockets (the page, the metrics, the gpsd feed, the
status socket) can use up the descriptors the outbox, the uplink and the serial ports
need, or hold a service for as long as they like.

`Admission` counts who is connected; `HttpGuard` wraps an HTTP server's protocol factory
(the status page's aiohttp) with admission and a deadline for each request's headers:
a connection that has not finished sending them in `header_s` is closed, however slowly
it trickles bytes. The descriptors the process may open are raised to what the unit
allows at start (`raise_fd_limit`), and the event loop's "accept() out of system
resource" complaint, should it still come, is logged once a minute, not per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MIN_FDS = 1024  # every listener's cap together stays far below this (the unit allows 16384)
HEADER_S = 10.0  # an HTTP request's headers, whole, within this of its first byte or the connection
END_OF_HEADERS = b"\r\n\r\n"


def peer_of(transport: asyncio.BaseTransport) -> str:
    """The peer's address (its host; a unix socket's peers are one peer)."""
    name = transport.get_extra_info("peername")
    if isinstance(name, tuple) and name:
        return str(name[0])
    return "local"


class Admission:
    """Who may hold a connection to one listener: at most `total`, at most `per_peer`
    from one address; the rest are closed at once, and counted."""

    def __init__(self, name: str, *, total: int, per_peer: int) -> None:
        self.name = name
        self.total = total
        self.per_peer = per_peer
        self._open: Counter[str] = Counter()
        self.refused = 0
        self.timed_out = 0
        self._said = 0.0

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def admit(self, peer: str) -> bool:
        if self.open >= self.total or self._open[peer] >= self.per_peer:
            self.refused += 1
            now = time.monotonic()
            if now - self._said >= 60.0:
                self._said = now
                log.warning(
                    "%s: connection from %s refused (%d open, %d from it; %d refused so far)",
                    self.name,
                    peer,
                    self.open,
                    self._open[peer],
                    self.refused,
                )
            return False
        self._open[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self._open[peer] -= 1
        if self._open[peer] <= 0:
            del self._open[peer]

    def snapshot(self) -> dict[str, int]:
        return {"open": self.open, "refused": self.refused, "timed_out": self.timed_out}


class _Guarded(asyncio.Protocol):
    """One HTTP connection: admitted or closed, and closed when a request's headers do
    not arrive whole within the deadline."""

    def __init__(self, inner: Callable[[], asyncio.Protocol], admission: Admission, header_s: float) -> None:
        self._make = inner
        self._admission = admission
        self._header_s = header_s
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._in_headers = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._peer = peer_of(transport)
        if not self._admission.admit(self._peer):
            transport.abort()
            return
        self._transport = transport
        self._inner = self._make()
        self._inner.connection_made(transport)
        self._headers_start()

    def _headers_start(self) -> None:
        self._in_headers, self._tail = True, b""
        self._timer = asyncio.get_running_loop().call_later(self._header_s, self._late)

    def _late(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._admission.timed_out += 1
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if not self._in_headers:
            self._headers_start()  # the next request on a kept-alive connection
        seen = self._tail + data
        if END_OF_HEADERS in seen:
            self._in_headers = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            after = seen.rsplit(END_OF_HEADERS, 1)[1]
            if after:  # a pipelined request's first bytes: its own deadline
                self._headers_start()
                self._tail = after[-3:]
        else:
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is None:
            return
        self._admission.release(self._peer)
        inner, self._inner, self._transport = self._inner, None, None
        inner.connection_lost(exc)


def guarded(
    factory: Callable[[], Any], admission: Admission, header_s: float = HEADER_S
) -> Callable[[], asyncio.Protocol]:
    """An HTTP server's protocol factory, each connection admitted and held to the header deadline."""
    return lambda: _Guarded(factory, admission, header_s)


def raise_fd_limit(want: int = 65536) -> int:
    """The soft limit on open descriptors raised to what the hard limit allows (the unit's
    LimitNOFILE), up to `want`; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    return int(soft)


class _OncePerMinute(logging.Filter):
    """asyncio logs every failed accept(); when descriptors run out that is thousands a
    second. One line a minute says the same."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -1e18
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in record.getMessage():
            return True
        now = time.monotonic()
        if now - self._last >= 60.0:
            self._last = now
            if self.suppressed:
                record.msg = f"{record.msg} ({self.suppressed} more since the last such line)"
                self.suppressed = 0
            return True
        self.suppressed += 1
        return False


ACCEPT_FILTER = _OncePerMinute()


def quiet_accept_errors() -> None:
    logging.getLogger("asyncio").addFilter(ACCEPT_FILTER)
