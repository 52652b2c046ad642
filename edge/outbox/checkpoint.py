"""Copy the WAL back into the database from a connection of its own, off the writer's path."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from edge.outbox.model import CHECKPOINT_S, Limits
from edge.sqlite_thread import SqliteThread

log = logging.getLogger(__name__)


async def checkpoint_loop(path: Path, limits: Limits, activity: Callable[[], tuple[int, int]]) -> None:
    """Every CHECKPOINT_S when something was written (`activity` changed, or the WAL did)."""
    async with await SqliteThread.open(path, name="outbox-checkpoint") as db:
        await db.execute("PRAGMA busy_timeout=1000")
        last: tuple[int, ...] = (-1, -1, -1)
        while True:
            await asyncio.sleep(CHECKPOINT_S)
            wal = path.with_name(path.name + "-wal")
            try:
                size = wal.stat().st_size
            except OSError:
                continue
            now = (size, *activity())
            if now == last:
                continue  # nothing written since the last checkpoint
            last = now
            # PASSIVE never blocks the writer; the WAL then restarts from its start and
            # journal_size_limit trims it. Only a WAL past its allowance gets a TRUNCATE,
            # which briefly holds the writer, to keep the disk within max_bytes.
            mode = "TRUNCATE" if size > limits.wal_allowance else "PASSIVE"
            try:
                await db.execute(f"PRAGMA wal_checkpoint({mode})")
            except sqlite3.Error as exc:
                log.debug("outbox: checkpoint postponed: %s", exc)
