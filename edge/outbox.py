"""The durable outbox: signed messages in SQLite until the broker acknowledges them.

Theory of operation: one writer task owns every write. Producers queue `Pending`
items; the writer takes everything queued, assigns each the next `seq`, has it
signed (the seq is inside the signed payload), inserts the lot and commits once
(group commit, WAL, synchronous=FULL), then resolves each producer's future. The
signing and the commit run as one call on the database thread (Ed25519 releases
the GIL), so the event loop is free meanwhile. A
life-safety producer awaits that future, so a device is told "received" only after
its alarm is on disk. PUBACKs become deletes, committed after the inserts in their
own transaction. The seq is the row's AUTOINCREMENT id (never below a persisted
floor), so it is never reused, and no committed message is ever changed.

Bounded: the rows may use `max_bytes` less a WAL allowance. Above that less a
reserve, telemetry is thinned (oldest first, keeping every 8th message as a
decimated track and the latest of each kind and source), then events; life-safety
and drop reports use the reserve and are never dropped. Every drop is handed to
`on_dropped` so it can be published as `outbox.dropped`. A disk that fills for
other reasons (ENOSPC) releases a reserve file so life-safety still commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from edge.base.errors import PermanentError
from edge.base.kinds import Prio
from edge.sqlite_thread import SqliteThread

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS msgs (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    prio INTEGER NOT NULL,
    kind TEXT    NOT NULL,
    src  TEXT    NOT NULL,
    tb   INTEGER NOT NULL,
    body BLOB    NOT NULL,
    at   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS msgs_lane ON msgs (prio, seq);
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""
ROW_OVERHEAD = 64  # bytes a row costs beyond its body (row header, kind, src, index entry)
# Never thinned, and admitted into the reserve: a gap or a full disk must never be silent.
PROTECTED_KINDS = frozenset({"outbox.dropped", "gateway.health"})
DECIMATE = 8  # thinning keeps every 8th telemetry message as a coarse track
MAX_RANGES_PER_REPORT = 500
SWEEP_S = 30.0  # TTL and disk-recovery checks
FULL_SWEEP_S = 2.0  # ...every 2 s while the disk is full, so telemetry resumes soon after
RESERVE_STEPS = 8  # the disk reserve is given up an eighth at a time, as alarms need it
HELD = "disk full and its reserve used up: life-safety held in memory until there is room"
DELETE_BATCH = 512  # acknowledged deletes worth a transaction at once
DELETE_GATHER_S = 0.02
DELETE_CHUNK = 64  # rows per delete transaction
CHECKPOINT_S = 0.5  # small and often: a big checkpoint's fsync stalls an alarm's commit behind it
QUEUE_HIGH = 128  # queued messages before producers are made to wait (bounds memory)
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26


class OutboxFull(Exception):
    """A message was refused: the outbox is full and it is not life-safety."""


class CorruptOutbox(Exception):
    """The database failed its integrity check at open."""


class OutboxUnavailable(PermanentError):
    """The outbox cannot be opened, for a reason other than corruption (an I/O error, a
    lock held by another process): it is left as it is, never quarantined."""


@dataclass(slots=True)
class Pending:
    """A message waiting for its seq: `make(seq)` returns the signed bytes."""

    prio: Prio
    kind: str
    src: str
    tb: int
    make: Callable[[int], bytes]
    done: asyncio.Future[int] | None = None
    # A small record committed in the same transaction as the message (key, value): what a
    # driver must remember exactly when the message is durable (an SOS event's counter).
    state: tuple[str, bytes] | None = None

    @property
    def protected(self) -> bool:
        return self.prio == Prio.LIFE_SAFETY or self.kind in PROTECTED_KINDS


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    prio: int
    kind: str
    body: bytes


Deleted = tuple[int, int, int, str]  # seq, prio, body bytes, kind
# _build's result: rows, the items that made them, the items that failed and why
Built = tuple[list[Row], list["Pending"], list[tuple["Pending", Exception]]]


@dataclass(slots=True)
class LaneStats:
    rows: int = 0
    bytes: int = 0


@dataclass(slots=True)
class OutboxStats:
    committed: int = 0
    acked: int = 0
    commits: int = 0
    dropped: int = 0
    refused: int = 0
    lanes: dict[int, LaneStats] = field(default_factory=lambda: {p: LaneStats() for p in Prio})


@dataclass(frozen=True, slots=True)
class Limits:
    """Disk budget and per-kind TTLs."""

    max_bytes: int = 256 * 1024 * 1024
    ttl_s: Mapping[str, int] = field(default_factory=dict)

    @property
    def wal_allowance(self) -> int:
        return min(16 * 1024 * 1024, self.max_bytes // 8)

    @property
    def budget(self) -> int:
        """Bytes the rows may use."""
        return self.max_bytes - self.wal_allowance

    @property
    def reserve(self) -> int:
        """The share only life-safety (and drop reports) may use."""
        return max(256 * 1024, self.budget // 20)


def ranges(seqs: Iterable[int]) -> list[list[int]]:
    """[1, 2, 3, 7] -> [[1, 3], [7, 7]]."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def drop_reports(dropped: list[tuple[int, str]], reason: str) -> list[dict[str, Any]]:
    """`outbox.dropped` records for (seq, kind) pairs, split so no message grows unbounded."""
    rs = ranges(s for s, _ in dropped)
    kinds = dict(Counter(k for _, k in dropped))
    out = []
    for i in range(0, len(rs), MAX_RANGES_PER_REPORT):
        part = rs[i : i + MAX_RANGES_PER_REPORT]
        out.append(
            {
                "reason": reason,
                "count": sum(b - a + 1 for a, b in part),
                "ranges": part,
                "kinds": kinds if i == 0 else {},
                "total": len(dropped),
            }
        )
    return out


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
    ) -> None:
        self.path = path
        self.limits = limits or Limits()
        self._durable = synchronous
        self._sync_mode = ""
        self._floor = seq_floor
        self._check = check
        self._db: SqliteThread | None = None
        self._reader: SqliteThread | None = None
        self._queue: list[Pending] = []
        self._acks: list[int] = []
        self._wake = asyncio.Event()
        self._items = asyncio.Event()  # a message (not only a delete) is waiting
        self._drained = asyncio.Event()  # the writer took the queue (see room())
        self._lock = asyncio.Lock()  # one flush at a time, even across cancellation
        self._page_size = 4096
        self._reserve_file = path.with_name(path.name + ".reserve")
        # Called after each commit that added rows, with those rows (oldest first).
        self.on_commit: Callable[[list[Row]], None] | None = None
        # Called with `outbox.dropped` records whenever rows were thinned or expired.
        self.on_dropped: Callable[[dict[str, Any]], object] | None = None
        # Called with the health record when it changes (`gateway.health`).
        self.on_health: Callable[[dict[str, Any]], object] | None = None
        self.degraded: str | None = None
        self._disk_full = False  # refuse all but life-safety until the disk has room again
        self._refusing = False  # a refusal was logged; the next is only counted
        # Protected messages that could not be committed (the disk and the reserve full):
        # kept here, unnumbered, and retried with every flush until the disk has room.
        self._held: list[Pending] = []
        self._held_logged = 0
        self.next_seq = 1
        self.hw = 0  # highest seq ever committed
        self.stats = OutboxStats()

    @property
    def db(self) -> SqliteThread:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    @property
    def usage(self) -> int:
        """Estimated bytes the rows use (bodies plus per-row overhead)."""
        return sum(lane.bytes + lane.rows * ROW_OVERHEAD for lane in self.stats.lanes.values())

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
        if not self._disk_full:
            self._ensure_reserve_file()
        return self

    async def _connect(self) -> SqliteThread:
        while True:
            try:
                db = await SqliteThread.open(self.path, name="outbox-writer")
            except sqlite3.Error as exc:
                raise OutboxUnavailable(f"cannot open the outbox {self.path}: {exc}") from exc
            try:
                await self._open(db)
            except (sqlite3.Error, OSError) as exc:
                await db.close()
                # A full disk may show as an I/O error (the WAL index cannot grow).
                low = self._disk_free() < self.limits.reserve
                full = _is_full(exc) or (_code(exc) == SQLITE_IOERR and low)
                if full and self._release_reserve():
                    # Started on a full disk: the reserve held from the last run makes room
                    # for the WAL and for life-safety; everything else is refused for now.
                    self._disk_full = True
                    self._set_degraded(f"disk full at start: {exc}")
                    continue
                if _code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB):
                    raise CorruptOutbox(f"{self.path}: {exc}") from exc
                # Not corruption: quarantining would set aside messages that are fine.
                raise OutboxUnavailable(f"cannot open the outbox {self.path}: {exc}") from exc
            except BaseException:
                await db.close()
                raise
            return db

    async def _open(self, db: SqliteThread) -> None:
        if self._check:
            (verdict,) = await db.fetchone("PRAGMA quick_check(1)") or ("no answer",)
            if verdict != "ok":
                raise CorruptOutbox(f"{self.path}: integrity check: {verdict}")
            (pages,) = await db.fetchone("PRAGMA page_count") or (0,)
            (size,) = await db.fetchone("PRAGMA page_size") or (4096,)
            on_disk = self.path.stat().st_size if self.path.exists() else 0
            wal = self.path.with_name(self.path.name + "-wal")
            if on_disk < int(pages) * int(size) and not (wal.exists() and wal.stat().st_size > 0):
                raise CorruptOutbox(f"{self.path}: truncated: {on_disk} bytes, {pages} pages of {size} bytes")
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(f"PRAGMA synchronous={self._durable}")
        # Some builds default to secure_delete=ON, which rewrites every freed page: a
        # delivered 10 KiB message then costs three page writes to delete. FAST zeroes
        # freed content only where that costs no extra I/O.
        await db.execute("PRAGMA secure_delete=FAST")
        self._sync_mode = self._durable
        row = await db.fetchone("PRAGMA page_size")
        self._page_size = int(row[0]) if row else 4096
        lim = self.limits
        await db.execute(f"PRAGMA journal_size_limit={lim.wal_allowance}")
        # Checkpoints run on their own connection (see checkpoint()), never inside a
        # commit an alarm is waiting for.
        await db.execute("PRAGMA wal_autocheckpoint=0")
        await db.execute(f"PRAGMA max_page_count={lim.budget // self._page_size}")
        await db.executescript(SCHEMA)
        if "at" not in {r[1] for r in await db.fetchall("PRAGMA table_info(msgs)")}:  # from before `at`
            await db.execute("ALTER TABLE msgs ADD COLUMN at INTEGER NOT NULL DEFAULT 0")
        row = await db.fetchone("SELECT seq FROM sqlite_sequence WHERE name = 'msgs'")
        self.hw = int(row[0]) if row else 0
        self.next_seq = max(self.hw + 1, self._floor)
        lanes = "SELECT prio, COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM msgs GROUP BY prio"
        for prio, n, nbytes in await db.fetchall(lanes):
            lane = self.stats.lanes.setdefault(int(prio), LaneStats())
            lane.rows, lane.bytes = int(n), int(nbytes)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._db is not None:
            try:
                await self._flush()  # what producers queued before we closed
                if self._held:
                    log.critical(
                        "outbox: closing with %d protected messages never stored (disk full): lost",
                        len(self._held),
                    )
                    _fail_all(self._held, OutboxFull("disk full; closed before there was room"))
                    self._held = []
            finally:
                if self._reader is not None:
                    await self._reader.close()
                    self._reader = None
                await self._db.close()
                self._db = None

    # producers -------------------------------------------------------------------

    def submit(self, item: Pending) -> asyncio.Future[int]:
        """Queue a message; the future resolves with its seq once it is committed."""
        if item.done is None:
            item.done = asyncio.get_running_loop().create_future()
        self._queue.append(item)
        self._wake.set()
        self._items.set()
        return item.done

    async def room(self) -> None:
        """Backpressure for producers: wait while the writer is far behind (bounded memory)."""
        while len(self._queue) >= QUEUE_HIGH:
            self._drained.clear()
            await self._drained.wait()

    async def append(self, item: Pending) -> int:
        """Queue a message and wait until it is on disk; returns its seq."""
        return await self.submit(item)

    def ack(self, seqs: Iterable[int]) -> None:
        """The broker has these: delete them with the next commit."""
        self._acks.extend(seqs)
        self._wake.set()

    # the writer --------------------------------------------------------------------

    async def run(self) -> None:
        """The single writer, and beside it the checkpointer."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._write_loop(), name="outbox.write")
            tg.create_task(self.checkpoint_loop(), name="outbox.checkpoint")

    async def _write_loop(self) -> None:
        """Group-commits queued messages and acknowledged deletes."""
        loop = asyncio.get_running_loop()
        last_sweep = loop.time()
        while True:
            next_sweep = last_sweep + (FULL_SWEEP_S if self._disk_full else SWEEP_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_sweep - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            if not self._queue and len(self._acks) < DELETE_BATCH:
                # Only deletes to do: they are never urgent, so let them gather for a
                # moment (one transaction instead of many); a new message cuts it short.
                self._items.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DELETE_GATHER_S):
                        await self._items.wait()
            # Shielded: a cancelled commit would leave the transaction open and the
            # producers' futures unresolved; closing waits for it on the lock instead.
            await asyncio.shield(self._flush())
            if loop.time() >= next_sweep:
                last_sweep = loop.time()
                await asyncio.shield(self.sweep())

    async def _flush(self) -> None:
        async with self._lock:
            items, self._queue = self._queue, []
            if self._held:
                items[:0], self._held = self._held, []
            acks, self._acks = self._acks, []
            self._drained.set()
            # Inserts commit first and on their own, so an alarm never waits behind a
            # batch of deletes; producers are told as soon as their rows are durable.
            if items:
                await self._insert(items)
            # Deletes go in small transactions, and stop as soon as a new message is
            # queued: an alarm waits for at most one small delete, never for a drain's worth.
            if acks:
                await self._delete_acked(acks)

    async def checkpoint_loop(self) -> None:
        """Copy the WAL back into the database from a second connection, off the writer's path."""
        async with await SqliteThread.open(self.path, name="outbox-checkpoint") as db:
            await db.execute("PRAGMA busy_timeout=1000")
            last: tuple[int, int, int] = (-1, -1, -1)
            while True:
                await asyncio.sleep(CHECKPOINT_S)
                wal = self.path.with_name(self.path.name + "-wal")
                try:
                    size = wal.stat().st_size
                except OSError:
                    continue
                activity = (size, self.stats.commits, self.stats.acked)
                if activity == last:
                    continue  # nothing written since the last checkpoint
                last = activity
                # PASSIVE never blocks the writer; the WAL then restarts from its start and
                # journal_size_limit trims it. Only a WAL past its allowance gets a TRUNCATE,
                # which briefly holds the writer, to keep the disk within max_bytes.
                mode = "TRUNCATE" if size > self.limits.wal_allowance else "PASSIVE"
                try:
                    await db.execute(f"PRAGMA wal_checkpoint({mode})")
                except sqlite3.Error as exc:
                    log.debug("outbox: checkpoint postponed: %s", exc)

    async def sweep(self, now_ms: int | None = None) -> None:
        """Expire rows past their kind's TTL; leave degraded mode when the disk has room."""
        async with self._lock:
            await self._expire(now_ms if now_ms is not None else time.time_ns() // 1_000_000)
            if self.degraded and self._disk_free() > 2 * self.limits.reserve:
                self._disk_full = False
                await self.db.execute(f"PRAGMA max_page_count={self.limits.budget // self._page_size}")
                self._ensure_reserve_file()
            if self._held:
                self._wake.set()  # retry them now

    def _build(self, items: list[Pending]) -> Built:
        """Number and sign: rows, the items that made them (made[i] produced rows[i]) and
        the items that failed. Touches no future, so it may run on the database thread."""
        rows: list[Row] = []
        made: list[Pending] = []
        failed: list[tuple[Pending, Exception]] = []
        seq = self.next_seq
        for it in items:
            try:
                body = it.make(seq)
            except Exception as exc:  # a bad producer must not sink the batch
                log.exception("outbox: cannot build %s from %s", it.kind, it.src)
                failed.append((it, exc))
                continue
            rows.append(Row(seq, int(it.prio), it.kind, body))
            made.append(it)
            seq += 1
        return rows, made, failed

    def _build_here(self, items: list[Pending]) -> tuple[list[Row], list[Pending]]:
        rows, made, failed = self._build(items)
        for it, exc in failed:
            _fail(it, exc)
        return rows, made

    async def _insert(self, items: list[Pending]) -> None:
        room = self.limits.budget - self.limits.reserve

        def build_and_commit(conn: sqlite3.Connection) -> tuple[*Built, BaseException | bool]:
            # Signing (Ed25519 releases the GIL) happens here, off the event loop, in the
            # same hop as the commit; only when the rows fit is the commit made here too.
            rows, made, failed = self._build(items)
            incoming = sum(len(r.body) + ROW_OVERHEAD for r in rows)
            if not rows or self.usage + incoming > room or self._disk_full:
                return rows, made, failed, False
            try:
                self._commit_in(conn, rows, made)
            except (sqlite3.Error, OSError) as exc:
                return rows, made, failed, exc
            return rows, made, failed, True

        rows, made, failed, outcome = await self._in_db_thread(build_and_commit)
        for it, exc in failed:
            _fail(it, exc)
        if not rows:
            return
        if outcome is False:
            incoming = sum(len(r.body) + ROW_OVERHEAD for r in rows)
            if self.usage + incoming > room:
                await self._thin(self.usage + incoming - room + self.limits.reserve // 4)
            if self.usage + incoming > room or self._disk_full:
                # Still no room (or the disk is full): only what must never be lost goes in,
                # renumbered so the refused messages leave no gap in the seqs.
                keep = self._keep_protected(made, "disk full" if self._disk_full else "outbox full")
                rows, made = self._build_here(keep)
                if not rows:
                    return
            try:
                await self._commit_rows(rows, made)
            except (sqlite3.Error, OSError) as exc:
                outcome = exc
            else:
                outcome = True
        if isinstance(outcome, BaseException):
            if not _is_full(outcome):
                log.error("outbox: commit of %d messages failed: %s", len(rows), outcome)
                _fail_all(made, outcome)
                return
            await self._insert_when_full(made, outcome)
            return
        self._committed(rows, made)

    async def _in_db_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the writer's thread in one hop.

        A commit is several statements; awaited one by one, each is a round trip
        through the event loop, which under load (a drain publishing thousands of
        messages a second) costs milliseconds each. An alarm's commit pays one."""
        return await self.db.run(fn)

    def _set_sync(self, conn: sqlite3.Connection, mode: str) -> None:
        if self._sync_mode != mode:
            conn.execute(f"PRAGMA synchronous={mode}")
            self._sync_mode = mode

    async def _commit_rows(self, rows: list[Row], made: list[Pending]) -> None:
        await self._in_db_thread(lambda conn: self._commit_in(conn, rows, made))

    def _commit_in(self, conn: sqlite3.Connection, rows: list[Row], made: list[Pending]) -> None:
        """Insert the rows and their state records in one durable transaction (db thread)."""
        at = time.time_ns() // 1_000_000
        params = [
            (r.seq, r.prio, r.kind, it.src, it.tb, r.body, at) for r, it in zip(rows, made, strict=True)
        ]
        states = [it.state for it in made if it.state is not None]
        self._set_sync(conn, self._durable)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO msgs (seq, prio, kind, src, tb, body, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            if states:
                conn.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", states)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # nothing to roll back
                conn.execute("ROLLBACK")
            raise

    async def _insert_when_full(self, made: list[Pending], exc: BaseException) -> None:
        """The disk (or the page cap) is full: keep only what must never be lost, giving up
        the disk reserve a step at a time until it fits; hold it in memory if even that
        is not enough (something else keeps filling the disk)."""
        if not self._disk_full:  # once: each change of health is itself a message to store
            self._disk_full = True
            self._set_degraded(f"disk full: {exc}")
        keep = self._keep_protected(made, "disk full")
        if not keep:
            return
        try:
            await self.db.execute(f"PRAGMA max_page_count={2 * self.limits.max_bytes // self._page_size}")
        except sqlite3.Error as exc2:
            log.debug("outbox: cannot lift the page cap: %s", exc2)
        while self._release_reserve():
            # Renumbered: seqs of rows that were never committed leave no gap.
            rows, made2 = self._build_here(keep)
            if not rows:
                return
            try:
                await self._commit_rows(rows, made2)
            except (sqlite3.Error, OSError) as exc2:
                if _is_full(exc2):
                    keep = made2
                    continue
                log.critical("outbox: cannot commit %d life-safety messages: %s", len(rows), exc2)
                _fail_all(made2, exc2)
                return
            self._committed(rows, made2)
            return
        self._hold(keep)

    def _hold(self, items: list[Pending]) -> None:
        """Keep protected messages the full disk refused, to retry with every flush."""
        self._held[:0] = items  # they were first in the flush that failed; they stay first
        self._set_degraded(HELD)
        if len(self._held) > self._held_logged:
            log.critical(
                "outbox: disk full and its reserve used up: %d protected messages (%s) held in "
                "memory, retried with every commit until there is room",
                len(self._held),
                ", ".join(sorted({it.kind for it in self._held})),
            )
        self._held_logged = len(self._held)

    def _keep_protected(self, items: list[Pending], why: str) -> list[Pending]:
        """Refuse what may be lost (counted; logged once until the next commit); the rest."""
        keep = []
        for it in items:
            if it.protected:
                keep.append(it)
                continue
            self.stats.refused += 1
            if not self._refusing:
                self._refusing = True
                log.warning("outbox: %s: refusing all but life-safety for now (counted in health)", why)
            _fail(it, OutboxFull(f"{why}; {it.kind} from {it.src} refused"))
        return keep

    def _committed(self, rows: list[Row], made: list[Pending]) -> None:
        self.stats.commits += 1
        self._refusing = False
        if not self._held:
            self._held_logged = 0
        self.next_seq = rows[-1].seq + 1
        self.hw = rows[-1].seq
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

    # deletes: acknowledged, thinned, expired ----------------------------------------

    async def _delete_acked(self, acks: list[int]) -> None:
        """Delete acknowledged rows, DELETE_CHUNK to a transaction, all in one call on the
        database thread (no loop round trip per chunk), stopping as soon as a message is
        queued; what is left goes back to the front of the acks."""

        def delete(conn: sqlite3.Connection) -> tuple[list[Deleted], int, BaseException | None]:
            found: list[Deleted] = []
            done = 0
            while done < len(acks):
                chunk = acks[done : done + DELETE_CHUNK]
                try:
                    found.extend(self._delete_in(conn, chunk))
                except (sqlite3.Error, OSError) as exc:
                    return found, done, exc
                done += len(chunk)
                if self._queue:  # read across threads: a list's length, safe under the GIL
                    break
            return found, done, None

        found, done, exc = await self._in_db_thread(delete)
        self._account(found)
        self.stats.acked += done
        if done < len(acks):
            self._acks[:0] = acks[done:]  # retried with the next flush
            if exc is None or not _is_full(exc):
                self._wake.set()
        if exc is not None:
            if not _is_full(exc):
                log.error("outbox: delete of %d acknowledged messages failed: %s", len(acks) - done, exc)
            elif not self._disk_full:
                # The WAL cannot grow: the deletes wait (their rows may be sent again, which
                # the platform deduplicates) and, like inserts, the disk is treated as full.
                self._disk_full = True
                self._set_degraded(f"disk full: {exc}")

    def _delete_in(self, conn: sqlite3.Connection, seqs: list[int]) -> list[Deleted]:
        """Delete rows by seq in one transaction (database thread); the rows found.

        A delete lost to a power cut only means a duplicate resend, so deletes do not
        pay for an fsync; the next durable insert commit syncs them anyway."""
        self._set_sync(conn, "NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        found: list[Deleted] = []
        try:
            for i in range(0, len(seqs), 500):
                chunk = seqs[i : i + 500]
                marks = ",".join("?" * len(chunk))
                cur = conn.execute(
                    f"DELETE FROM msgs WHERE seq IN ({marks}) RETURNING seq, prio, LENGTH(body), kind",
                    chunk,
                )
                found.extend((int(a), int(b), int(c), str(d)) for a, b, c, d in cur.fetchall())
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return found

    def _account(self, found: list[Deleted]) -> list[tuple[int, int, str]]:
        """Take deleted rows off the lane statistics (loop side); (seq, prio, kind) each."""
        out: list[tuple[int, int, str]] = []
        for seq, prio, nbytes, kind in found:
            lane = self.stats.lanes[prio]
            lane.rows -= 1
            lane.bytes -= nbytes
            out.append((seq, prio, kind))
        return out

    async def _delete_txn(self, seqs: list[int]) -> list[tuple[int, int, str]]:
        return self._account(await self._in_db_thread(lambda conn: self._delete_in(conn, seqs)))

    _THIN_PHASES = (
        # telemetry and bulk, keeping a decimated track and each source's latest message
        f"prio >= {int(Prio.TELEMETRY)} AND seq % {DECIMATE} != 0 AND seq NOT IN "
        f"(SELECT MAX(seq) FROM msgs WHERE prio >= {int(Prio.TELEMETRY)} GROUP BY kind, src)",
        # then the decimated track too (still keeping each source's latest)
        f"prio >= {int(Prio.TELEMETRY)} AND seq NOT IN "
        f"(SELECT MAX(seq) FROM msgs WHERE prio >= {int(Prio.TELEMETRY)} GROUP BY kind, src)",
        # then events, oldest first; never a drop report
        f"prio = {int(Prio.EVENT)} AND kind NOT IN ({', '.join(repr(k) for k in PROTECTED_KINDS)})",
    )

    async def _thin(self, need: int) -> None:
        """Free at least `need` bytes by dropping what matters least, oldest first."""
        dropped: list[tuple[int, str]] = []
        freed = 0
        for where in self._THIN_PHASES:
            while freed < need:
                batch = await self.db.fetchall(
                    f"SELECT seq, LENGTH(body) FROM msgs WHERE {where} ORDER BY seq LIMIT 2000"
                )
                if not batch:
                    break
                chosen: list[int] = []
                for seq, nbytes in batch:
                    chosen.append(int(seq))
                    freed += int(nbytes) + ROW_OVERHEAD
                    if freed >= need:
                        break
                try:
                    gone = await self._delete_txn(chosen)
                except (sqlite3.Error, OSError) as exc:
                    log.error("outbox: thinning failed: %s", exc)
                    return
                dropped.extend((s, k) for s, _, k in gone)
            if freed >= need:
                break
        if dropped:
            log.warning("outbox: full; dropped %d messages to make room", len(dropped))
            self._report(dropped, "full")

    async def _expire(self, now_ms: int) -> None:
        dropped: list[tuple[int, str]] = []
        for kind, ttl in self.limits.ttl_s.items():
            old = await self.db.fetchall(
                "SELECT seq FROM msgs WHERE kind = ? AND prio > 0 AND at < ? LIMIT 50000",
                (kind, now_ms - ttl * 1000),
            )
            seqs = [int(r[0]) for r in old]
            if seqs:
                try:
                    gone = await self._delete_txn(seqs)
                except (sqlite3.Error, OSError) as exc:
                    log.error("outbox: TTL expiry failed: %s", exc)
                    return
                dropped.extend((s, k) for s, _, k in gone)
        if dropped:
            self._report(dropped, "ttl")

    def _report(self, dropped: list[tuple[int, str]], reason: str) -> None:
        self.stats.dropped += len(dropped)
        if self.on_dropped is not None:
            for rec in drop_reports(dropped, reason):
                self.on_dropped(rec)

    # disk reserve and health ---------------------------------------------------------

    def _disk_free(self) -> int:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return 0

    def _ensure_reserve_file(self) -> None:
        """Hold `reserve` bytes of disk so life-safety can still commit when the disk fills."""
        size = self.limits.reserve
        try:
            if self._reserve_file.exists() and self._reserve_file.stat().st_size >= size:
                self._set_degraded(None)
                return
            fd = os.open(self._reserve_file, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError as exc:
            # What part of the reserve is held stays held (it is all alarms will have).
            self._set_degraded(f"cannot hold the {size}-byte disk reserve: {exc.strerror}")
            return
        self._set_degraded(None)

    def _release_reserve(self) -> bool:
        """Give up a step of the disk reserve (the file shrinks); False when none is left.
        A step at a time, so that whatever keeps filling the disk cannot take it all at once."""
        try:
            size = self._reserve_file.stat().st_size
            step = max(1, self.limits.reserve // RESERVE_STEPS)
            left = size - step if size >= 2 * step else 0  # the last step takes the remainder
            if left:
                os.truncate(self._reserve_file, left)
            else:
                self._reserve_file.unlink()
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                log.error("outbox: cannot release the disk reserve: %s", exc)
            return False
        log.warning("outbox: disk full; released %d bytes of the disk reserve for life-safety", size - left)
        return True

    def _set_degraded(self, why: str | None) -> None:
        if why == self.degraded:
            return
        self.degraded = why
        if why:
            log.error("outbox: degraded: %s", why)
        if self.on_health is not None:
            self.on_health(self.health())

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
            "SELECT seq, prio, kind, body FROM msgs"
            " WHERE prio = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (prio, after, upto if upto is not None else 2**62, limit),
        )
        return [Row(int(s), int(p), str(k), bytes(b)) for s, p, k, b in found]

    def depth(self, prio: int | None = None) -> int:
        if prio is None:
            return sum(lane.rows for lane in self.stats.lanes.values())
        return self.stats.lanes[prio].rows


def _code(exc: BaseException) -> int | None:
    """SQLite's primary result code of an error (extended codes carry it in the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and _code(exc) == SQLITE_FULL


def _fail(it: Pending, exc: BaseException) -> None:
    if it.done is not None and not it.done.done():
        it.done.set_exception(exc)


def _fail_all(items: list[Pending], exc: BaseException) -> None:
    for it in items:
        _fail(it, exc)
