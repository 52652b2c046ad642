"""One SQLite connection on its own thread, driven from asyncio.

The outbox signs and commits a whole batch in one hop on the database's thread (see
docs/architecture.md, the outbox): that needs "run this function with the connection, on
the connection's thread", which aiosqlite offers only through private methods. This is
that, with the standard library: a one-worker executor owns the connection, so every call
runs on the same thread, in order, and never on the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class SqliteThread:
    """A connection (autocommit: transactions are explicit) and the one thread that uses it."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn

    @classmethod
    async def open(cls, path: Path, *, name: str = "sqlite") -> SqliteThread:
        """Connect on a new thread; sqlite3.Error if the file cannot be opened."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        loop = asyncio.get_running_loop()

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

        try:
            conn = await loop.run_in_executor(executor, connect)
        except BaseException:
            # the worker exits before we return: nothing is left to report to a closed loop
            await asyncio.to_thread(executor.shutdown, wait=True)
            raise
        return cls(executor, conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the connection's thread."""
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("the connection is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)

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
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def __aenter__(self) -> SqliteThread:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
