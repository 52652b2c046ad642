"""The durable outbox: signed messages in SQLite until the broker acknowledges them.

Theory of operation: one writer task owns every write. Producers queue `Pending`
items; the writer takes everything queued, assigns each the next `seq`, has it
signed (the seq is inside the signed payload), inserts the lot and commits once
(group commit, WAL, synchronous=FULL), then resolves each producer's future. A
life-safety producer awaits that future, so a device is told "received" only after
its alarm is on disk. PUBACKs queue deletes that ride on the next commit. The seq
is the row's AUTOINCREMENT id, so it is never reused, even after every row has
been delivered and deleted, and no committed message is ever changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiosqlite

from edge.kinds import Prio

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS msgs (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    prio INTEGER NOT NULL,
    kind TEXT    NOT NULL,
    src  TEXT    NOT NULL,
    tb   INTEGER NOT NULL,
    body BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS msgs_lane ON msgs (prio, seq);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v);
"""


@dataclass(slots=True)
class Pending:
    """A message waiting for its seq: `make(seq)` returns the signed bytes."""

    prio: Prio
    kind: str
    src: str
    tb: int
    make: Callable[[int], bytes]
    done: asyncio.Future[int] | None = None


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    prio: int
    kind: str
    body: bytes


@dataclass(slots=True)
class LaneStats:
    rows: int = 0
    bytes: int = 0


@dataclass(slots=True)
class OutboxStats:
    committed: int = 0
    acked: int = 0
    commits: int = 0
    lanes: dict[int, LaneStats] = field(default_factory=lambda: {p: LaneStats() for p in Prio})


class Outbox:
    """SQLite-backed, prioritised, at-least-once message store."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._durable = synchronous
        self._sync_mode = ""
        self._db: aiosqlite.Connection | None = None
        self._queue: list[Pending] = []
        self._acks: list[int] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one flush at a time, even across cancellation
        # Called after each commit that added rows, with those rows (oldest first).
        self.on_commit: Callable[[list[Row]], None] | None = None
        self.next_seq = 1
        self.hw = 0  # highest seq ever committed
        self.stats = OutboxStats()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    async def __aenter__(self) -> Outbox:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={self._durable}")
            self._sync_mode = self._durable
            await db.executescript(SCHEMA)
            async with db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'msgs'") as cur:
                row = await cur.fetchone()
            self.hw = int(row[0]) if row else 0
            self.next_seq = self.hw + 1
            async with db.execute(
                "SELECT prio, COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM msgs GROUP BY prio"
            ) as cur:
                for prio, n, nbytes in await cur.fetchall():
                    lane = self.stats.lanes.setdefault(int(prio), LaneStats())
                    lane.rows, lane.bytes = int(n), int(nbytes)
        except BaseException:
            await db.close()
            raise
        self._db = db
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._db is not None:
            try:
                await self._flush()  # what producers queued before we closed
            finally:
                await self._db.close()
                self._db = None

    # producers -------------------------------------------------------------------

    def submit(self, item: Pending) -> asyncio.Future[int]:
        """Queue a message; the future resolves with its seq once it is committed."""
        if item.done is None:
            item.done = asyncio.get_running_loop().create_future()
        self._queue.append(item)
        self._wake.set()
        return item.done

    async def append(self, item: Pending) -> int:
        """Queue a message and wait until it is on disk; returns its seq."""
        return await self.submit(item)

    def ack(self, seqs: Iterable[int]) -> None:
        """The broker has these: delete them with the next commit."""
        self._acks.extend(seqs)
        self._wake.set()

    # the writer --------------------------------------------------------------------

    async def run(self) -> None:
        """The single writer: group-commits queued messages and acknowledged deletes."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Shielded: a cancelled commit would leave the transaction open and the
            # producers' futures unresolved; closing waits for it on the lock instead.
            await asyncio.shield(self._flush())

    async def _flush(self) -> None:
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        items, self._queue = self._queue, []
        acks, self._acks = self._acks, []
        # Inserts commit first and on their own, so an alarm never waits behind a big
        # batch of deletes; producers are told as soon as their rows are durable.
        if items:
            await self._insert(items)
        if acks:
            await self._delete_acked(acks)

    async def _sync(self, mode: str) -> None:
        if self._sync_mode != mode:
            await self.db.execute(f"PRAGMA synchronous={mode}")
            self._sync_mode = mode

    async def _insert(self, items: list[Pending]) -> None:
        rows: list[Row] = []
        made: list[Pending] = []  # made[i] produced rows[i]
        seq = self.next_seq
        for it in items:
            try:
                body = it.make(seq)
            except Exception as exc:  # a bad producer must not sink the batch
                log.exception("outbox: cannot build %s from %s", it.kind, it.src)
                if it.done is not None and not it.done.done():
                    it.done.set_exception(exc)
                continue
            rows.append(Row(seq, int(it.prio), it.kind, body))
            made.append(it)
            seq += 1
        if not rows:
            return
        db = self.db
        try:
            await self._sync(self._durable)
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(
                "INSERT INTO msgs (seq, prio, kind, src, tb, body) VALUES (?, ?, ?, ?, ?, ?)",
                [(r.seq, r.prio, r.kind, it.src, it.tb, r.body) for r, it in zip(rows, made, strict=True)],
            )
            await db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            log.error("outbox: commit of %d messages failed: %s", len(rows), exc)
            with contextlib.suppress(sqlite3.Error):  # nothing to roll back
                await db.execute("ROLLBACK")
            for it in made:
                if it.done is not None and not it.done.done():
                    it.done.set_exception(exc)
            return
        self.stats.commits += 1
        self.next_seq = seq
        self.hw = seq - 1
        for it, r in zip(made, rows, strict=True):
            if it.done is not None and not it.done.done():
                it.done.set_result(r.seq)
        for r in rows:
            lane = self.stats.lanes[r.prio]
            lane.rows += 1
            lane.bytes += len(r.body)
        self.stats.committed += len(rows)
        if self.on_commit is not None:
            self.on_commit(rows)

    async def _delete_acked(self, acks: list[int]) -> None:
        db = self.db
        try:
            # A delete lost to a power cut only means a duplicate resend, so deletes do
            # not pay for an fsync; the next durable insert commit syncs them anyway.
            await self._sync("NORMAL")
            await db.execute("BEGIN IMMEDIATE")
            deleted = await self._delete(acks)
            await db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            log.error("outbox: delete of %d acknowledged messages failed: %s", len(acks), exc)
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")
            self._acks.extend(acks)  # retried with the next flush
            return
        for prio, nbytes in deleted:
            lane = self.stats.lanes[prio]
            lane.rows -= 1
            lane.bytes -= nbytes
        self.stats.acked += len(deleted)

    async def _delete(self, seqs: list[int]) -> list[tuple[int, int]]:
        db = self.db
        out: list[tuple[int, int]] = []
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            async with db.execute(
                f"DELETE FROM msgs WHERE seq IN ({marks}) RETURNING prio, LENGTH(body)", chunk
            ) as cur:
                out.extend((int(p), int(n)) for p, n in await cur.fetchall())
        return out

    # the reader --------------------------------------------------------------------

    async def fetch(self, prio: int, after: int, limit: int) -> list[Row]:
        """Rows of one lane with seq above `after`, oldest first."""
        async with self.db.execute(
            "SELECT seq, prio, kind, body FROM msgs WHERE prio = ? AND seq > ? ORDER BY seq LIMIT ?",
            (prio, after, limit),
        ) as cur:
            return [Row(int(s), int(p), str(k), bytes(b)) for s, p, k, b in await cur.fetchall()]

    def depth(self, prio: int | None = None) -> int:
        if prio is None:
            return sum(lane.rows for lane in self.stats.lanes.values())
        return self.stats.lanes[prio].rows
