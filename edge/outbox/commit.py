"""Numbering, signing and committing what the writer takes from its queue (see
edge/outbox/__init__.py): the seq counters and the seqs reserved for write-behind
(edge/outbox/behind.py), the commit's outcome (committed, thinned to fit, refused, held
for a full disk, renumbered), saving what was published before it was written, and the
lane accounting of new rows."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.outbox.fulldisk import FullDisk
from edge.outbox.model import (
    RESERVE_FAST_S,
    RESERVE_MAX,
    RESERVE_MIN,
    RESERVE_SLOW_S,
    ROW_OVERHEAD,
    Built,
    Deleted,
    Limits,
    OutboxStats,
    Pending,
    Row,
    SeqRecord,
    fail,
    fail_all,
    is_full,
    ranges,
)
from edge.outbox.opening import Opened
from edge.outbox.prune import Pruner
from edge.outbox.txn import Transactions
from edge.sqlite_thread import SqliteThread

log = logging.getLogger(__name__)
INLINE_MAX = 4  # messages signed on the loop when none is to be written (see Committer.insert)


@dataclass(slots=True)
class Part:
    rows: list[Row] = field(default_factory=list)
    made: list[Pending] = field(default_factory=list)  # made[i] produced rows[i]


@dataclass(slots=True)
class First:
    """A flush's first try, as the database thread leaves it."""

    deletes: list[int] = field(default_factory=list)
    behind: bool = False
    low: int | None = None
    rows: list[Row] = field(default_factory=list)
    made: list[Pending] = field(default_factory=list)
    failed: list[tuple[Pending, Exception]] = field(default_factory=list)
    now: Part = field(default_factory=Part)  # written
    wait: Part = field(default_factory=Part)  # numbered and signed, not written
    gone: list[Deleted] = field(default_factory=list)
    folded: bool = False


@dataclass(slots=True)
class Inserted:
    deletes: list[int]  # the deletes not made (to be made on their own)
    now: Part = field(default_factory=Part)  # committed, not yet announced
    wait: Part = field(default_factory=Part)  # numbered, signed, not written


class Committer:
    def __init__(
        self,
        *,
        limits: Limits,
        txn: Transactions,
        stats: OutboxStats,
        disk: FullDisk,
        db: Callable[[], SqliteThread],
        usage: Callable[[], int],
        pruner: Pruner,
        account: Callable[[list[Deleted]], object],
        on_commit: Callable[[list[Row]], None] | None = None,
    ) -> None:
        self.limits = limits
        self._txn = txn
        self.stats = stats
        self.disk = disk
        self._db = db
        self._usage = usage
        self.pruner = pruner
        self._account = account  # deleted rows taken off the lanes
        self._on_commit = on_commit  # after each commit that added rows, with them (oldest first)
        self.page_size = 4096
        self.next_seq = 1
        self.hw = 0  # highest seq ever given (committed, or published before it is written)
        self.reserved = 0  # the highest seq recorded as possibly given (RESERVE_KEY)
        self.clean = True  # what is recorded says no seq is outstanding (low > high)
        self._chunk = RESERVE_MIN
        self._reserved_at = 0.0
        self.recorded_low = 1  # recorded: below it every seq is written, acknowledged or never given
        self.written: list[tuple[int, int]] = []  # recorded: seqs from `low` up written first

    def resume(self, opened: Opened, floor: int) -> None:
        """Where the seqs stand in an outbox just opened."""
        self.page_size = opened.page_size
        # the last run may have given seqs up to what it reserved (write-behind): never again
        self.hw = max(opened.hw, opened.reserved)
        self.next_seq = max(self.hw + 1, floor)
        self.reserved = opened.reserved
        self.clean = not opened.outstanding  # the first commit with the link down settles it
        self.recorded_low, self.written = opened.low, list(opened.written)

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

    async def insert(
        self, items: list[Pending], deletes: list[int], *, behind: bool = False, low: int | None = None
    ) -> Inserted:
        """Commit the items, and `deletes` in the same transaction when it goes through on
        the first try. With `behind`, the items that may wait are numbered and signed but not
        written (the seqs they take reserved first; `low` is the lowest seq still unsaved).
        The rows committed are not announced here: the caller hands them over with the
        unsaved ones, in order."""
        room = self.limits.budget - self.limits.reserve
        first = First()
        first.deletes = deletes
        first.behind, first.low = behind, low
        few = len(items) <= INLINE_MAX and self.next_seq + len(items) - 1 <= self.reserved
        if behind and few and all(it.may_wait for it in items):
            # Nothing to write: signing a few here costs less than the hop to the database
            # thread and back (a message or two at a time on a healthy link).
            return await self._after(first, self._first_try(None, items, first, room), room)
        outcome = await self._db().run(lambda conn: self._first_try(conn, items, first, room))
        return await self._after(first, outcome, room)

    async def _after(self, first: First, outcome: BaseException | bool, room: int) -> Inserted:
        """After the first try: what was committed, numbered or refused, and the deletes."""
        deletes = first.deletes
        for it, exc in first.failed:
            fail(it, exc)
        done = Inserted(deletes)
        if outcome is not True:
            if first.rows:
                await self._settle(first.rows, first.made, outcome, room)
            return done
        if first.folded:
            self._account(first.gone)
            self.stats.acked += len(deletes)
            done.deletes = []
        if first.now.rows:
            self._committed(first.now.rows, first.now.made, announce=False)
        self.next_seq = max(self.next_seq, first.rows[-1].seq + 1)
        self.hw = max(self.hw, first.rows[-1].seq)
        for it, r in zip(first.wait.made, first.wait.rows, strict=True):
            if it.done is not None and not it.done.done():
                it.done.set_result(r.seq)  # numbered and in the outbox's keeping (memory)
        self.stats.unsaved += len(first.wait.rows)
        done.now, done.wait = first.now, first.wait
        return done

    def _first_try(
        self, conn: sqlite3.Connection | None, items: list[Pending], first: First, room: int
    ) -> BaseException | bool:
        """On the database thread: number and sign (Ed25519 releases the GIL) and, when the
        rows fit, commit, in one hop. False: none of it was tried (no room, a full disk)."""
        first.rows, first.made, first.failed = self._build(items)
        for r, it in zip(first.rows, first.made, strict=True):
            part = first.wait if first.behind and it.may_wait else first.now
            part.rows.append(r)
            part.made.append(it)
        now = first.now
        incoming = sum(len(r.body) + ROW_OVERHEAD for r in now.rows)
        if not first.rows or self._usage() + incoming > room or self.disk.full:
            return False  # everything goes the way it goes without write-behind
        top = first.rows[-1].seq
        seqs = self._record(first, top)
        try:
            if now.rows:
                assert conn is not None  # insert goes to the database thread for any write
                first.gone = self._txn.commit(conn, now.rows, now.made, first.deletes, seqs)
                first.folded = True
            elif seqs is not None:
                assert conn is not None
                self._txn.reserve(conn, seqs)
                self.stats.reservations += 1
        except (sqlite3.Error, OSError) as exc:
            return exc
        if seqs is not None:
            if seqs.high > self.reserved and not seqs.settled:
                self._reserved_at = time.monotonic()
            self._recorded(seqs)
        return True

    def _record(self, first: First, top: int) -> SeqRecord | None:
        """What this commit records of the seqs (None: nothing to record).

        Before a message not written is published past what is reserved, a chunk more is
        reserved, sized so that this comes about every RESERVE_FAST_S..RESERVE_SLOW_S (a page
        and an fsync on its own). A commit of written rows while seqs are outstanding moves
        `low` up to the oldest unsaved message (or past this commit) and lists its own seqs as
        written first: an alarm acknowledged and deleted is never reported lost after a
        crash. With the link down and nothing unsaved it settles the record instead (the
        first commit after a crash's report, or of an outage); never while the link is up,
        where the next message would have to reserve again, fsync and all."""
        now, wait = first.now.rows, first.wait.rows
        reserve = bool(wait) and top > self.reserved
        if not first.behind and first.low is None and not self.clean:
            return SeqRecord(top + 1, top)
        if not reserve and (self.clean or not now):
            return None
        unsaved = [x for x in (first.low, wait[0].seq if wait else None) if x is not None]
        low = min(unsaved) if unsaved else top + 1
        high = self.reserved
        if reserve:
            since = time.monotonic() - self._reserved_at
            if since < RESERVE_FAST_S:
                self._chunk = min(self._chunk * 2, RESERVE_MAX)
            elif since > RESERVE_SLOW_S:
                self._chunk = max(self._chunk // 2, RESERVE_MIN)
            high = top + self._chunk
        spans = [(a, b) for a, b in self.written if b >= low] + [
            (a, b) for a, b in ranges(r.seq for r in now) if b >= low
        ]
        return SeqRecord(low, high, tuple(spans))

    async def save(self, rows: list[Row], made: list[Pending], *, settled: bool) -> list[tuple[int, str]]:
        """Write rows that were published before being written (their commit came due, the
        link went, or the publisher could not take them). With `settled` (nothing else is
        unsaved), the transaction also records that no seq is outstanding. The rows that
        could not be written (a full disk): their seqs are spent, so they are reported."""
        room = self.limits.budget - self.limits.reserve
        incoming = sum(len(r.body) + ROW_OVERHEAD for r in rows)
        if self._usage() + incoming > room and not self.disk.full:
            await self.pruner.thin(self._usage() + incoming - room + self.limits.reserve // 4)
        if self._usage() + incoming > room or self.disk.full:
            self.stats.refused += len(rows)
            return [(r.seq, r.kind) for r in rows]
        seqs = SeqRecord(self.next_seq, self.next_seq - 1) if settled and not self.clean else None
        try:
            await self._db().run(lambda conn: self._txn.commit(conn, rows, made, (), seqs))
        except (sqlite3.Error, OSError) as exc:
            if is_full(exc):
                self.disk.filled(exc)
            else:
                log.error("outbox: writing %d published messages failed: %s", len(rows), exc)
            self.stats.refused += len(rows)
            return [(r.seq, r.kind) for r in rows]
        if seqs is not None:
            self._recorded(seqs)
        self.stats.saved_late += len(rows)
        self._committed(rows, made, announce=False)
        return []

    async def settle_seqs(self) -> None:
        """At a clean close, with nothing unsaved: record that no seq is outstanding."""
        if self.clean:
            return
        seqs = SeqRecord(self.next_seq, self.next_seq - 1)
        await self._db().run(lambda conn: self._txn.reserve(conn, seqs))
        self._recorded(seqs)

    async def _settle(
        self, rows: list[Row], made: list[Pending], outcome: BaseException | bool, room: int
    ) -> None:
        """After the first try: committed, or made to fit, or met as a full disk."""
        if outcome is False:
            tight = await self._insert_tight(rows, made, room)
            if tight is None:
                return
            outcome = tight
        if isinstance(outcome, BaseException):
            if not is_full(outcome):
                log.error("outbox: commit of %d messages failed: %s", len(rows), outcome)
                fail_all(made, outcome)
                return
            await self.disk.store(
                made, outcome, lift_cap=self._lift_cap, build=self._build_here, commit=self._commit
            )
            return
        self._committed(rows, made)

    async def _insert_tight(
        self, rows: list[Row], made: list[Pending], room: int
    ) -> BaseException | bool | None:
        """The rows did not fit: thin, then commit what may go in (None: nothing may)."""
        incoming = sum(len(r.body) + ROW_OVERHEAD for r in rows)
        if self._usage() + incoming > room:
            await self.pruner.thin(self._usage() + incoming - room + self.limits.reserve // 4)
        if self._usage() + incoming > room or self.disk.full:
            # Still no room (or the disk is full): only what must never be lost goes in,
            # renumbered so the refused messages leave no gap in the seqs.
            keep = self.disk.keep_protected(made, "disk full" if self.disk.full else "outbox full")
            rows[:], made[:] = self._build_here(keep)
            if not rows:
                return None
        try:
            await self._commit_written(rows, made)
        except (sqlite3.Error, OSError) as exc:
            return exc
        return True

    async def _lift_cap(self) -> None:
        await self._db().execute(f"PRAGMA max_page_count={2 * self.limits.max_bytes // self.page_size}")

    async def _commit(self, rows: list[Row], made: list[Pending]) -> None:
        await self._commit_written(rows, made)
        self._committed(rows, made)

    async def _commit_written(self, rows: list[Row], made: list[Pending]) -> None:
        """Commit rows (a full outbox's or disk's way), listed as written first while seqs
        are outstanding, as any commit of written rows is (see _record)."""
        seqs = None
        if not self.clean:
            low = self.recorded_low
            spans = self.written + [(a, b) for a, b in ranges(r.seq for r in rows) if b >= low]
            seqs = SeqRecord(low, self.reserved, tuple(spans))
        await self._db().run(lambda conn: self._txn.commit(conn, rows, made, (), seqs))
        if seqs is not None:
            self._recorded(seqs)

    def _recorded(self, seqs: SeqRecord) -> None:
        """What is recorded now (after its transaction committed)."""
        self.reserved, self.clean, self.recorded_low = seqs.high, seqs.settled, seqs.low
        self.written = [] if seqs.settled else list(seqs.written)

    def _committed(self, rows: list[Row], made: list[Pending], *, announce: bool = True) -> None:
        self.stats.commits += 1
        self.disk.committed()
        self.next_seq = max(self.next_seq, rows[-1].seq + 1)
        self.hw = max(self.hw, rows[-1].seq)
        for it, r in zip(made, rows, strict=True):
            if it.done is not None and not it.done.done():
                it.done.set_result(r.seq)
        for r in rows:
            lane = self.stats.lanes[r.prio]
            lane.rows += 1
            lane.bytes += len(r.body)
        self.stats.committed += len(rows)
        if announce and self._on_commit is not None:
            self._on_commit(rows)
