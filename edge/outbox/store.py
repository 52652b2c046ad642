"""The outbox: its lifetime (open, check, close), the producers' and the publisher's
interface, and its reader (see edge/outbox/__init__.py for the theory; the writer is
writer.py's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edge.outbox.behind import Live
from edge.outbox.checkpoint import checkpoint_loop
from edge.outbox.fulldisk import FullDisk
from edge.outbox.model import (
    ROW_OVERHEAD,
    SQLITE_CORRUPT,
    SQLITE_IOERR,
    SQLITE_NOTADB,
    CorruptOutbox,
    LaneStats,
    Limits,
    OutboxStats,
    OutboxUnavailable,
    Pending,
    Row,
    is_full,
    range_reports,
    sqlite_code,
)
from edge.outbox.opening import count_lanes, prepare, quick_check, suspect_marker
from edge.outbox.reserve import DiskReserve
from edge.outbox.txn import Transactions
from edge.outbox.writer import Writer
from edge.sqlite_thread import SqliteThread

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxHooks:
    """What the outbox tells the rest of the gateway."""

    committed: Callable[[list[Row]], None] | None = None  # rows just committed, oldest first
    # the publisher, which may take messages before they are written (write-behind); without
    # it every message is written first and announced through `committed`
    live: Live | None = None
    dropped: Callable[[dict[str, Any]], object] | None = None  # `outbox.dropped` records
    health: Callable[[dict[str, Any]], object] | None = None  # `gateway.health`, on a change


class Outbox:
    """SQLite-backed, prioritised, bounded, at-least-once message store."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        limits: Limits | None = None,
        seq_floor: int = 1,
        check: bool = True,
        hooks: OutboxHooks = OutboxHooks(),
    ) -> None:
        self.path = path
        self.limits = limits or Limits()
        self._txn = Transactions(synchronous)
        self._floor = seq_floor
        self._check = check
        self._db: SqliteThread | None = None
        self._reader: SqliteThread | None = None
        self.stats = OutboxStats()
        self._uncounted = (0, 0)  # rows and bytes found at open, not yet counted by lane
        self.disk = FullDisk(
            DiskReserve(path, self.limits), self.stats, health=self.health, on_health=hooks.health
        )
        self.writer = Writer(
            limits=self.limits,
            txn=self._txn,
            stats=self.stats,
            disk=self.disk,
            db=lambda: self.db,
            usage=lambda: self.usage,
            on_commit=hooks.committed,
            on_dropped=hooks.dropped,
            live=hooks.live,
        )
        # `outbox.dropped` records of seqs the last run published and may have lost (it
        # stopped without closing, with messages not yet written): for the gateway to send
        self.unsaved_at_open: list[dict[str, Any]] = []

    @property
    def db(self) -> SqliteThread:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    @property
    def usage(self) -> int:
        """Estimated bytes the rows use (bodies plus per-row overhead)."""
        lanes = sum(lane.bytes + lane.rows * ROW_OVERHEAD for lane in self.stats.lanes.values())
        return lanes + self._uncounted[1]

    @property
    def hw(self) -> int:
        """The highest seq ever given (committed, or published before it was written)."""
        return self.writer.commits.hw

    @property
    def reserved(self) -> int:
        """The highest seq recorded as possibly given (write-behind reserves ahead)."""
        return max(self.writer.commits.reserved, self.hw)

    @property
    def next_seq(self) -> int:
        return self.writer.commits.next_seq

    @property
    def degraded(self) -> str | None:
        return self.disk.degraded

    @property
    def reserve(self) -> DiskReserve:
        return self.disk.reserve

    async def __aenter__(self) -> Outbox:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await self._connect()
        self._db = db
        # Reads (the publisher's pages) get their own connection and thread, so an
        # alarm's commit never queues behind a 640 KiB read (WAL lets them overlap).
        try:
            self._reader = await SqliteThread.open(self.path, name="outbox-reader")
        except BaseException:
            await db.close()
            raise
        if not self.disk.full:
            self.disk.ensure_reserve()
        return self

    async def _connect(self) -> SqliteThread:
        while True:
            try:
                db = await SqliteThread.open(self.path, name="outbox-writer", cache_kib=1024)
            except sqlite3.Error as exc:
                raise OutboxUnavailable(f"cannot open the outbox {self.path}: {exc}") from exc
            try:
                await self._open(db)
            except (sqlite3.Error, OSError) as exc:
                await db.close()
                # A full disk may show as an I/O error (the WAL index cannot grow).
                low = self.reserve.free() < self.limits.reserve
                full = is_full(exc) or (sqlite_code(exc) == SQLITE_IOERR and low)
                if full and self.reserve.release():
                    # Started on a full disk: the reserve held from the last run makes room
                    # for the WAL and for life-safety; everything else is refused for now.
                    self.disk.full = True
                    self.disk.set_degraded(f"disk full at start: {exc}")
                    continue
                if sqlite_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB):
                    raise CorruptOutbox(f"{self.path}: {exc}") from exc
                # Not corruption: quarantining would set aside messages that are fine.
                raise OutboxUnavailable(f"cannot open the outbox {self.path}: {exc}") from exc
            except BaseException:
                await db.close()
                raise
            return db

    async def _open(self, db: SqliteThread) -> None:
        opened = await prepare(db, self.path, self.limits, durable=self._txn.durable, check=self._check)
        self._txn.sync_mode = self._txn.durable
        self.writer.commits.resume(opened, self._floor)
        if opened.unsaved:
            ranges = [[a, b] for a, b in opened.unsaved]
            self.unsaved_at_open = range_reports(ranges, "unsaved")
            log.warning(
                "outbox: the last run stopped without closing: %d seqs it may have published "
                "without writing are reported as possibly lost",
                sum(b - a + 1 for a, b in ranges),
            )
        # Until the lanes are counted (just after the start, Outbox.run), the rows are known
        # by number and their cost by the pages they fill.
        self._uncounted = (opened.rows, opened.used_bytes)
        with contextlib.suppress(FileNotFoundError):
            suspect_marker(self.path).unlink()  # prepare() checked it in full: it passed

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._db is not None:
            try:
                await self.writer.close()  # what producers queued before we closed, and the unsaved
                self.disk.lost_at_close()
            finally:
                if self._reader is not None:
                    await self._reader.close()
                    self._reader = None
                await self._db.close()
                self._db = None

    # producers and the publisher ---------------------------------------------------

    def submit(self, item: Pending) -> asyncio.Future[int]:
        """Queue a message; the future resolves with its seq once it is committed."""
        return self.writer.submit(item)

    async def room(self) -> None:
        """Backpressure for producers: wait while the writer is far behind (bounded memory)."""
        await self.writer.room()

    async def append(self, item: Pending) -> int:
        """Queue a message and wait until it is on disk; returns its seq."""
        item.durable = True
        return await self.writer.submit(item)

    def ack(self, seqs: Iterable[int]) -> None:
        """The broker has these: delete them with the next commit."""
        self.writer.ack(seqs)

    async def flush(self) -> None:
        """Commit what is queued now, without waiting for company."""
        await self.writer.flush()

    def attach(self, live: Live) -> None:
        """The publisher, from now on taking messages before they are written (write-behind)."""
        self.writer.behind.live = live

    def link_down(self) -> None:
        """The link went: what was published and not yet written is written now."""
        self.writer.link_down()

    async def save_unsaved(self) -> None:
        """Write everything published and not yet written (before a new session reads)."""
        await self.writer.save_unsaved()

    async def sweep(self, now_ms: int | None = None) -> None:
        """Expire rows past their TTL; leave degraded mode when the disk has room."""
        await self.writer.sweep(now_ms)

    # the writer --------------------------------------------------------------------

    async def run(self) -> None:
        """The single writer, and beside it the checkpointer; first, what the start left
        for later so as not to delay the first message: the lanes counted, the file checked."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._after_start(), name="outbox.check")
            tg.create_task(self.writer.run(), name="outbox.write")
            tg.create_task(
                checkpoint_loop(self.path, self.limits, self.stats, self.writer.wrote),
                name="outbox.checkpoint",
            )

    async def _after_start(self) -> None:
        """Count the lanes (a scan of every row: commits wait for it, once, so the figures
        are exact from then on), then run SQLite's quick check on a connection of its own,
        beside live traffic. A check that fails leaves the suspect marker and raises
        CorruptOutbox: the gateway reopens the outbox, checks it in full and quarantines it."""
        try:
            if self._uncounted[0]:
                async with self.writer.lock:  # the scan is the database's truth, commits included
                    counted = await count_lanes(self.db)
                    for prio, lane in self.stats.lanes.items():
                        lane.rows, lane.bytes = counted.get(prio, (0, 0))
                    for prio, (n, nbytes) in counted.items():
                        self.stats.lanes.setdefault(prio, LaneStats(n, nbytes))
                    self._uncounted = (0, 0)
            if self._check:
                async with await SqliteThread.open(self.path, name="outbox-check") as db:
                    await quick_check(db, self.path)
        except (CorruptOutbox, sqlite3.DatabaseError) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and sqlite_code(exc) not in (
                SQLITE_CORRUPT,
                SQLITE_NOTADB,
            ):
                raise
            await asyncio.to_thread(suspect_marker(self.path).touch)
            log.critical("outbox: the check after the start failed: %s; reopening it", exc)
            raise CorruptOutbox(f"{self.path}: {exc}") from exc

    def health(self) -> dict[str, Any]:
        return {
            "state": "degraded" if self.degraded else "ok",
            "reason": self.degraded or "",
            "outbox_bytes": self.usage,
            "outbox_max_bytes": self.limits.max_bytes,
            "outbox_rows": self.depth(),
            "dropped": self.stats.dropped,
            "refused": self.stats.refused,
        }

    def snapshot(self) -> dict[str, Any]:
        """The outbox's entry in the status (`oldest_age_s` is added by a read: `oldest`)."""
        return {
            "hw": self.hw,
            "depth": self.depth(),
            "lanes": {int(p): {"rows": s.rows, "bytes": s.bytes} for p, s in self.stats.lanes.items()},
            "committed": self.stats.committed,
            "commits": self.stats.commits,
            # write-behind: published first; never written; written after all; waiting now
            "published_unsaved": self.stats.unsaved,
            "acked_unsaved": self.stats.acked_unsaved,
            "saved_late": self.stats.saved_late,
            "unsaved": len(self.writer.unsaved),
            "bytes": self.usage,
            "max_bytes": self.limits.max_bytes,
            "dropped": self.stats.dropped,
            "refused": self.stats.refused,
            "health": self.health()["state"],
            "degraded": self.degraded or "",
        }

    # the reader --------------------------------------------------------------------

    async def read_state(self, prefix: str) -> dict[str, bytes]:
        """The state records (see Pending.state) whose key starts with `prefix`."""
        found = await (self._reader or self.db).fetchall(
            "SELECT key, value FROM state WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return {str(k): bytes(v) for k, v in found}

    async def fetch(self, prio: int, after: int, limit: int, *, upto: int | None = None) -> list[Row]:
        """Rows of one lane with `after` < seq (<= `upto`), oldest first."""
        found = await (self._reader or self.db).fetchall(
            "SELECT seq, prio, kind, body, at FROM msgs"
            " WHERE prio = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (prio, after, upto if upto is not None else 2**62, limit),
        )
        return [Row(int(s), int(p), str(k), bytes(b), int(at)) for s, p, k, b, at in found]

    async def oldest(self) -> dict[int, int]:
        """Per lane with rows, when its oldest row was committed (unix ms)."""
        out: dict[int, int] = {}
        for prio, lane in self.stats.lanes.items():
            if lane.rows:
                found = await (self._reader or self.db).fetchall(
                    "SELECT at FROM msgs WHERE prio = ? ORDER BY seq LIMIT 1", (int(prio),)
                )
                if found:
                    out[int(prio)] = int(found[0][0])
        return out

    def depth(self, prio: int | None = None) -> int:
        if prio is None:
            return sum(lane.rows for lane in self.stats.lanes.values()) + self._uncounted[0]
        return self.stats.lanes[prio].rows
