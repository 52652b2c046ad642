"""One SQLite connection on its own thread, driven from asyncio.

The outbox signs and commits a whole batch in one hop on the database's thread (see
docs/architecture.md, the outbox): that needs "run this function with the connection, on
the connection's thread", which aiosqlite offers only through private methods. This is
that, with the standard library: one thread owns the connection and runs the calls in
order, never on the event loop, each answered through `call_soon_threadsafe`. (A
`ThreadPoolExecutor` would do the same, but its future chaining cost about 11 us more a
call, measured; an alarm's commit makes two or three such hops.)
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def _resolve(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return  # the caller gave up waiting; the call itself ran (or runs) all the same
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class SqliteThread:
    """A connection (autocommit: transactions are explicit) and the one thread that uses it."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path, *, name: str = "sqlite", cache_kib: int = 512) -> SqliteThread:
        """Connect on a new thread; sqlite3.Error if the file cannot be opened. Each
        connection's page cache is `cache_kib` (SQLite's default, 2 MiB, four times over
        was a fifth of a station's memory; the OS caches the file anyway)."""
        self = cls(name)
        self._thread.start()

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # not a database, or a corrupt one: said by the first real statement, not here
            with contextlib.suppress(sqlite3.DatabaseError):
                conn.execute(f"PRAGMA cache_size=-{cache_kib}")
            return conn

        try:
            self._conn = await self._call(connect)
        except BaseException:
            # the thread ends before we return: nothing is left to report to a closed loop
            await self._stop()
            raise
        return self

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut, loop = job
            try:
                result, exc = fn(), None
            except BaseException as e:  # handed to the caller, whatever it is
                result, exc = None, e
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_resolve, fut, result, exc)

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, fut, loop))
        return await fut

    async def _stop(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the connection's thread."""
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("the connection is closed")
        return await self._call(lambda: fn(conn))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.run(lambda c: c.execute(sql, params).close())

    async def executescript(self, sql: str) -> None:
        await self.run(lambda c: c.executescript(sql).close())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self.run(lambda c: c.execute(sql, params).fetchone())

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self.run(lambda c: c.execute(sql, params).fetchall())

    async def close(self) -> None:
        """Close the connection on its thread, then end the thread."""
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                await self._call(conn.close)
        finally:
            await self._stop()

    async def __aenter__(self) -> SqliteThread:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
