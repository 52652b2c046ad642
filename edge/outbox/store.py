"""The outbox's writer, and its reader (see edge/outbox/__init__.py for the theory)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from edge.base.kinds import Prio
from edge.outbox.checkpoint import checkpoint_loop
from edge.outbox.model import (
    DELETE_BATCH,
    DELETE_CHUNK,
    DELETE_GATHER_S,
    DELETE_LINGER_S,
    FULL_SWEEP_S,
    GROUP_MAX,
    HELD,
    MAX_HELD,
    QUEUE_HIGH,
    ROW_OVERHEAD,
    SQLITE_CORRUPT,
    SQLITE_IOERR,
    SQLITE_NOTADB,
    SWEEP_S,
    Built,
    CorruptOutbox,
    Deleted,
    LaneStats,
    Limits,
    OutboxFull,
    OutboxStats,
    OutboxUnavailable,
    Pending,
    Row,
    drop_reports,
    fail,
    fail_all,
    is_full,
    sqlite_code,
)
from edge.outbox.opening import count_lanes, prepare, quick_check, suspect_marker
from edge.outbox.prune import Pruner
from edge.outbox.reserve import DiskReserve
from edge.outbox.txn import Transactions
from edge.sqlite_thread import SqliteThread

log = logging.getLogger(__name__)
T = TypeVar("T")


class Outbox:
    """SQLite-backed, prioritised, bounded, at-least-once message store.

    One class, past the size the project otherwise keeps to, on purpose: it is the single
    writer, and its queue, the outcome of each commit (committed, refused, held for a
    full disk, renumbered), the seq counters and the lane accounting are one state
    machine driven from one task. What could stand apart does (the transactions, thinning
    and expiry, the disk reserve, opening, checkpoints: the other modules here)."""

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
        self._txn = Transactions(synchronous)
        self._floor = seq_floor
        self._check = check
        self._db: SqliteThread | None = None
        self._reader: SqliteThread | None = None
        self._queue: list[Pending] = []
        self._acks: list[int] = []
        self._wake = asyncio.Event()
        self._items = asyncio.Event()  # a message (not only a delete) is waiting
        self._urgent = False  # a queued message may not wait for a group commit
        self._busy = False  # the last flush was a full one: a busy stream needs no lingering
        self._queued_at = 0.0  # loop time the oldest queued message arrived
        self._acked_at = 0.0  # loop time the oldest waiting delete arrived
        self._drained = asyncio.Event()  # the writer took the queue (see room())
        self._lock = asyncio.Lock()  # one flush at a time, even across cancellation
        self._page_size = 4096
        self.reserve = DiskReserve(path, self.limits)
        self._pruner = Pruner(self._fetch_any, self._delete_txn, self._report)
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
        self._uncounted = (0, 0)  # rows and bytes found at open, not yet counted by lane
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
        lanes = sum(lane.bytes + lane.rows * ROW_OVERHEAD for lane in self.stats.lanes.values())
        return lanes + self._uncounted[1]

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
            self._ensure_reserve()
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
                    self._disk_full = True
                    self._set_degraded(f"disk full at start: {exc}")
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
        self._page_size = opened.page_size
        self.hw = opened.hw
        self.next_seq = max(self.hw + 1, self._floor)
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
                await self._flush(final=True)  # what producers queued before we closed
                if self._held:
                    log.critical(
                        "outbox: closing with %d protected messages never stored (disk full): lost",
                        len(self._held),
                    )
                    fail_all(self._held, OutboxFull("disk full; closed before there was room"))
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
        loop = asyncio.get_running_loop()
        if item.done is None:
            item.done = loop.create_future()
        if not self._queue:
            self._queued_at = loop.time()
        if item.prio < Prio.TELEMETRY or item.protected:
            self._urgent = True
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
        if not self._acks:
            self._acked_at = asyncio.get_running_loop().time()
        self._acks.extend(seqs)
        self._wake.set()

    # the writer --------------------------------------------------------------------

    async def run(self) -> None:
        """The single writer, and beside it the checkpointer; first, what the start left
        for later so as not to delay the first message: the lanes counted, the file checked."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._after_start(), name="outbox.check")
            tg.create_task(self._write_loop(), name="outbox.write")
            tg.create_task(
                checkpoint_loop(self.path, self.limits, lambda: (self.stats.committed, self.stats.acked)),
                name="outbox.checkpoint",
            )

    async def _after_start(self) -> None:
        """Count the lanes (a scan of every row: commits wait for it, once, so the figures
        are exact from then on), then run SQLite's quick check on a connection of its own,
        beside live traffic. A check that fails leaves the suspect marker and raises
        CorruptOutbox: the gateway reopens the outbox, checks it in full and quarantines it."""
        try:
            if self._uncounted[0]:
                async with self._lock:  # the scan is the database's truth, commits included
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
            await self._linger()
            # Shielded: a cancelled commit would leave the transaction open and the
            # producers' futures unresolved; closing waits for it on the lock instead.
            await asyncio.shield(self._flush())
            if loop.time() >= next_sweep:
                last_sweep = loop.time()
                await asyncio.shield(self.sweep())

    async def _linger(self) -> None:
        """Wait for what is queued to be worth a commit. An alarm or an event commits at
        once (taking everything queued with it); telemetry waits up to group_commit_s
        for company, or until GROUP_MAX messages are queued; acknowledged deletes wait up
        to DELETE_LINGER_S to ride along with a commit (a lost delete is only a resend)."""
        loop = asyncio.get_running_loop()
        # Lingering is for a trickle: when the last flush was full, commits are big enough
        # already, and the end of a burst should not wait for company that is not coming.
        group = 0.0 if self._busy else self.limits.group_commit_s
        while True:
            if self._urgent or self._held or len(self._queue) >= GROUP_MAX:
                return
            if self._queue:
                if group <= 0:
                    return
                deadline = self._queued_at + group
            elif self._acks and len(self._acks) < DELETE_BATCH:
                # only deletes: let them gather (one transaction instead of many)
                deadline = self._acked_at + (DELETE_LINGER_S if group > 0 else DELETE_GATHER_S)
            else:
                return
            if loop.time() >= deadline:
                return
            self._items.clear()
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    await self._items.wait()
            except TimeoutError:
                return

    async def _flush(self, *, final: bool = False) -> None:
        async with self._lock:
            items, self._queue = self._queue, []
            if self._held:
                items[:0], self._held = self._held, []
            self._urgent = False
            # Deletes alone wait for a commit to ride along with (see _linger), unless
            # there are many, or they have waited long enough, or the outbox is closing.
            lingered = asyncio.get_running_loop().time() >= self._acked_at + DELETE_LINGER_S
            if (
                items
                or final
                or self.limits.group_commit_s <= 0
                or self._busy
                or lingered
                or len(self._acks) >= DELETE_BATCH
            ):
                acks, self._acks = self._acks, []
            else:
                acks = []
            self._busy = len(items) >= GROUP_MAX or len(acks) >= DELETE_BATCH
            self._drained.set()
            # An alarm's commit is its own, so it never waits behind a batch of deletes;
            # any other commit takes the waiting deletes into its transaction (one fsync,
            # the pages written once). Producers are told once their rows are durable.
            if items:
                alarm = any(it.prio == Prio.LIFE_SAFETY for it in items)
                fold = [] if alarm else acks[:DELETE_CHUNK]  # small: an alarm may be next
                acks = acks[len(fold) :]
                unfolded = await self._insert(items, fold)
                acks[:0] = unfolded
            # Deletes go in small transactions, and stop as soon as a new message is
            # queued: an alarm waits for at most one small delete, never for a drain's worth.
            if acks:
                await self._delete_acked(acks)

    async def sweep(self, now_ms: int | None = None) -> None:
        """Expire rows past their kind's TTL; leave degraded mode when the disk has room."""
        async with self._lock:
            await self._pruner.expire(
                self.limits.ttl_s, now_ms if now_ms is not None else time.time_ns() // 1_000_000
            )
            if self.degraded and self.reserve.free() > 2 * self.limits.reserve:
                self._disk_full = False
                await self.db.execute(f"PRAGMA max_page_count={self.limits.budget // self._page_size}")
                self._ensure_reserve()
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
            fail(it, exc)
        return rows, made

    async def _insert(self, items: list[Pending], deletes: list[int]) -> list[int]:
        """Commit the items, and `deletes` in the same transaction when it goes through on
        the first try; the deletes not made (to be made on their own)."""
        room = self.limits.budget - self.limits.reserve
        gone: list[Deleted] = []

        def build_and_commit(conn: sqlite3.Connection) -> tuple[*Built, BaseException | bool]:
            # Signing (Ed25519 releases the GIL) happens here, off the event loop, in the
            # same hop as the commit; only when the rows fit is the commit made here too.
            rows, made, failed = self._build(items)
            incoming = sum(len(r.body) + ROW_OVERHEAD for r in rows)
            if not rows or self.usage + incoming > room or self._disk_full:
                return rows, made, failed, False
            try:
                gone.extend(self._txn.commit(conn, rows, made, deletes))
            except (sqlite3.Error, OSError) as exc:
                return rows, made, failed, exc
            return rows, made, failed, True

        rows, made, failed, outcome = await self._in_db_thread(build_and_commit)
        for it, exc in failed:
            fail(it, exc)
        if outcome is True:
            self._account(gone)
            self.stats.acked += len(deletes)
            deletes = []
        if not rows:
            return deletes
        if outcome is False:
            incoming = sum(len(r.body) + ROW_OVERHEAD for r in rows)
            if self.usage + incoming > room:
                await self._pruner.thin(self.usage + incoming - room + self.limits.reserve // 4)
            if self.usage + incoming > room or self._disk_full:
                # Still no room (or the disk is full): only what must never be lost goes in,
                # renumbered so the refused messages leave no gap in the seqs.
                keep = self._keep_protected(made, "disk full" if self._disk_full else "outbox full")
                rows, made = self._build_here(keep)
                if not rows:
                    return deletes
            try:
                await self._commit_rows(rows, made)
            except (sqlite3.Error, OSError) as exc:
                outcome = exc
            else:
                outcome = True
        if isinstance(outcome, BaseException):
            if not is_full(outcome):
                log.error("outbox: commit of %d messages failed: %s", len(rows), outcome)
                fail_all(made, outcome)
                return deletes
            await self._insert_when_full(made, outcome)
            return deletes
        self._committed(rows, made)
        return deletes

    async def _in_db_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the writer's thread in one hop.

        A commit is several statements; awaited one by one, each is a round trip
        through the event loop, which under load (a drain publishing thousands of
        messages a second) costs milliseconds each. An alarm's commit pays one."""
        return await self.db.run(fn)

    async def _commit_rows(self, rows: list[Row], made: list[Pending]) -> None:
        await self._in_db_thread(lambda conn: self._txn.commit(conn, rows, made))

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
        while self.reserve.release():
            # Renumbered: seqs of rows that were never committed leave no gap.
            rows, made2 = self._build_here(keep)
            if not rows:
                return
            try:
                await self._commit_rows(rows, made2)
            except (sqlite3.Error, OSError) as exc2:
                if is_full(exc2):
                    keep = made2
                    continue
                log.critical("outbox: cannot commit %d life-safety messages: %s", len(rows), exc2)
                fail_all(made2, exc2)
                return
            self._committed(rows, made2)
            return
        self._hold(keep)

    def _hold(self, items: list[Pending]) -> None:
        """Keep protected messages the full disk refused, to retry with every flush.
        At most MAX_HELD: past it, the source holding the most gives up its newest, so
        one source flooding alarms can neither exhaust memory nor crowd out another's."""
        self._held[:0] = items  # they were first in the flush that failed; they stay first
        if len(self._held) > MAX_HELD:
            self._shed_held()
        self._set_degraded(HELD)
        if len(self._held) > self._held_logged:
            log.critical(
                "outbox: disk full and its reserve used up: %d protected messages (%s) held in "
                "memory, retried with every commit until there is room",
                len(self._held),
                ", ".join(sorted({it.kind for it in self._held})),
            )
        self._held_logged = len(self._held)

    def _shed_held(self) -> None:
        by_src: dict[str, list[int]] = {}
        for i, it in enumerate(self._held):
            by_src.setdefault(it.src, []).append(i)
        gone: set[int] = set()
        for _ in range(len(self._held) - MAX_HELD):
            biggest = max(by_src.values(), key=len)
            gone.add(biggest.pop())  # that source's newest
        kept = []
        for i, it in enumerate(self._held):
            if i in gone:
                self.stats.refused += 1
                fail(it, OutboxFull(f"disk full, {MAX_HELD} alarms held; {it.kind} from {it.src} refused"))
            else:
                kept.append(it)
        self._held = kept
        log.critical("outbox: %d held messages refused from the sources holding the most", len(gone))

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
            fail(it, OutboxFull(f"{why}; {it.kind} from {it.src} refused"))
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
                    found.extend(self._txn.delete(conn, chunk))
                except (sqlite3.Error, OSError) as exc:
                    return found, done, exc
                done += len(chunk)
                if self._queue:  # read across threads: a list's length, safe under the GIL
                    break
            return found, done, None

        found, done, exc = await self._in_db_thread(delete)
        self.stats.delete_commits += 1
        self._account(found)
        self.stats.acked += done
        if done < len(acks):
            self._acks[:0] = acks[done:]  # retried with the next flush
            if exc is None or not is_full(exc):
                self._wake.set()
        if exc is not None:
            if not is_full(exc):
                log.error("outbox: delete of %d acknowledged messages failed: %s", len(acks) - done, exc)
            elif not self._disk_full:
                # The WAL cannot grow: the deletes wait (their rows may be sent again, which
                # the platform deduplicates) and, like inserts, the disk is treated as full.
                self._disk_full = True
                self._set_degraded(f"disk full: {exc}")

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
        return self._account(await self._in_db_thread(lambda conn: self._txn.delete(conn, seqs)))

    def _report(self, dropped: list[tuple[int, str]], reason: str) -> None:
        self.stats.dropped += len(dropped)
        if self.on_dropped is not None:
            for rec in drop_reports(dropped, reason):
                self.on_dropped(rec)

    # disk reserve and health ---------------------------------------------------------

    def _ensure_reserve(self) -> None:
        self._set_degraded(self.reserve.ensure())

    async def _fetch_any(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return await self.db.fetchall(sql, params)

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
