"""A small fault-injecting TCP proxy between the gateway and the broker (runs in a thread).

Modes: `pass` forwards; `delay` forwards each chunk after `delay_s`; `slow` forwards at
`rate` bytes/s (a thin uplink: what is sent faster queues in the socket buffers); `blackhole` keeps
the connections open but forwards nothing (a half-open link: no FIN, no RST, just
silence, as when a 4G modem loses its bearer); `cut()` closes every connection now;
`refuse` closes new connections at once; `mute` forwards what the gateway sends and
nothing back (a broker that takes every message and never acknowledges one). With a
`tap` (`tests.support.wiretap.WireTap`) every chunk forwarded is also handed to it, so a
test can read what the broker acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal

from tests.support.wiretap import DOWN, UP, WireTap

Mode = Literal["pass", "delay", "slow", "blackhole", "refuse", "mute"]


class FaultProxy:
    def __init__(
        self, target_port: int, *, target_host: str = "127.0.0.1", tap: WireTap | None = None
    ) -> None:
        self._target = (target_host, target_port)
        self._tap = tap
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self.rate = 0.0
        self.port = 0
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("proxy did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = asyncio.all_tasks(self._loop)
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.close()
            return
        try:
            ureader, uwriter = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        conn = self.connections
        self._writers |= {writer, uwriter}
        try:
            await asyncio.gather(
                self._pipe(reader, uwriter, conn, UP), self._pipe(ureader, writer, conn, DOWN)
            )
        finally:
            for w in (writer, uwriter):
                self._writers.discard(w)
                w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int, direction: str
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # blackhole: nothing through, nothing closed
                if self.mode == "mute" and direction == DOWN:
                    continue  # the broker's answers (CONNACK, PUBACK, PINGRESP) never arrive
                if self.mode == "delay" and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                elif self.mode == "slow" and self.rate:
                    await asyncio.sleep(len(data) / self.rate)
                writer.write(data)
                if self._tap is not None:
                    self._tap.feed(conn, direction, data)
                await writer.drain()
        writer.close()

    def set_mode(self, mode: Mode, delay_s: float = 0.0, rate: float = 0.0) -> None:
        self._loop.call_soon_threadsafe(self._set, mode, delay_s, rate)

    def _set(self, mode: Mode, delay_s: float, rate: float) -> None:
        self.mode, self.delay_s, self.rate = mode, delay_s, rate
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()

    def cut(self) -> None:
        """Close every proxied connection now (a dropped link)."""

        def close_all() -> None:
            for w in list(self._writers):
                w.transport.abort()

        self._loop.call_soon_threadsafe(close_all)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
