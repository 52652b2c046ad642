"""systemd notification (Type=notify, watchdog) and the local status socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge.listeners import Admission

log = logging.getLogger(__name__)


STOP_WITHIN_S = 15.0  # the unit's TimeoutStopSec is 20: a stop never needs systemd's SIGKILL


def exit_if_stuck(why: str, code: int, within_s: float = STOP_WITHIN_S) -> threading.Timer:
    """Exit the process with `code` if it is still running `within_s` from now (a task
    that ignores its cancellation, a thread blocked in a driver): a gateway that is
    stopping, or whose core failed, always ends, so systemd can start it again. Cancel
    the returned timer once the stop is done."""

    def fire() -> None:
        with contextlib.suppress(OSError):
            os.write(2, f"gridedge: {why}; still running {within_s:.0f} s later: exiting\n".encode())
        os._exit(code)

    timer = threading.Timer(within_s, fire)
    timer.daemon = True
    timer.start()
    return timer


def sd_notify(state: str) -> bool:
    """Send one sd_notify(3) datagram; False when not run by systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError as exc:
        log.warning("systemd: cannot notify %r: %s", state, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of WatchdogSec, when systemd asked for pings."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog() -> None:
    """Ping systemd from the event loop: a stuck loop stops the pings, and systemd restarts it."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)


STATUS_CLIENTS = 16  # status socket connections at once (gridedge status, scripts)
STATUS_S = 5.0  # each gets its document within this, or is closed
STATUS = Admission("status socket", total=STATUS_CLIENTS, per_peer=STATUS_CLIENTS)


async def serve_status(path: Path, snapshot: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Answer every connection on a unix socket with one JSON status document: at most
    `STATUS_CLIENTS` at once, each within `STATUS_S` (a client that does not read is
    closed, it cannot hold the socket)."""
    admission = STATUS

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not admission.admit("local"):
            writer.transport.abort()
            return
        try:
            async with asyncio.timeout(STATUS_S):
                body = json.dumps(await snapshot(), default=str).encode() + b"\n"
                writer.write(body)
                writer.close()
                await writer.wait_closed()  # all of it read by the client, within the deadline
        except TimeoutError:
            admission.timed_out += 1
            writer.transport.abort()
        except (ConnectionError, OSError):
            writer.transport.abort()
        finally:
            admission.release("local")

    _unlink(path)
    try:
        server = await asyncio.start_unix_server(handle, path=str(path))
    except OSError as exc:
        # no status is no reason to stop taking alarms: say so once and carry on
        log.error("status: cannot listen at %s: %s", path, exc.strerror or exc)
        return
    os.chmod(path, 0o660)  # members of the service's group may ask (gridedge status)
    try:
        async with server:
            await server.serve_forever()
    finally:
        _unlink(path)


def _unlink(path: Path) -> None:
    """Remove a socket left at `path` by an earlier run; anything else there is not ours
    to remove (the status socket then cannot listen, and says so)."""
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


def read_status(path: Path, timeout: float = 3.0) -> dict[str, Any]:
    """Ask a running gateway for its status (used by `gridedge status`)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    doc = json.loads(b"".join(chunks))
    if not isinstance(doc, dict):
        raise ValueError("status is not a JSON object")
    return doc
