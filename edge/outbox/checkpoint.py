"""Copy the WAL back into the database from a connection of its own, off the writer's path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

from edge.outbox.model import CHECKPOINT_MAX_S, CHECKPOINT_ROWS, CHECKPOINT_S, Limits, OutboxStats
from edge.sqlite_thread import SqliteThread

log = logging.getLogger(__name__)


async def checkpoint_loop(path: Path, limits: Limits, stats: OutboxStats, wrote: asyncio.Event) -> None:
    """Copy the WAL back when CHECKPOINT_ROWS rows were written or deleted since the last
    time, or CHECKPOINT_MAX_S passed with any: on an SD card every page a checkpoint writes
    is wear, and a page rewritten by many commits (the table's last leaf, the lane index,
    the sequence) is written to the database once per checkpoint, not once per commit.
    It looks every CHECKPOINT_S while the writer writes (`wrote`), and sleeps while it
    does not (on a healthy link with write-behind, most of the time)."""
    loop = asyncio.get_running_loop()
    async with await SqliteThread.open(path, name="outbox-checkpoint") as db:
        await db.execute("PRAGMA busy_timeout=1000")
        last, last_at = stats.writes, loop.time()
        while True:
            await asyncio.sleep(CHECKPOINT_S)
            if stats.writes == last:
                wrote.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CHECKPOINT_MAX_S):
                        await wrote.wait()
            wal = path.with_name(path.name + "-wal")
            try:
                size = wal.stat().st_size
            except OSError:
                continue
            now = stats.writes
            due = now - last >= CHECKPOINT_ROWS or (now != last and loop.time() - last_at >= CHECKPOINT_MAX_S)
            if not due and size <= limits.wal_allowance:
                continue
            last, last_at = now, loop.time()
            # PASSIVE never blocks the writer; the WAL then restarts from its start (its
            # file keeps its length, so the next commits write over it without growing it).
            # Only a WAL past its allowance gets a TRUNCATE, which briefly holds the
            # writer, to keep the disk within max_bytes.
            mode = "TRUNCATE" if size > limits.wal_allowance else "PASSIVE"
            try:
                await db.execute(f"PRAGMA wal_checkpoint({mode})")
            except sqlite3.Error as exc:
                log.debug("outbox: checkpoint postponed: %s", exc)
