"""Numbering, signing and committing what the writer takes from its queue (see
edge/outbox/__init__.py): the seq counters, the commit's outcome (committed, thinned to
fit, refused, held for a full disk, renumbered) and the lane accounting of new rows."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from edge.outbox.fulldisk import FullDisk
from edge.outbox.model import (
    ROW_OVERHEAD,
    Built,
    Deleted,
    Limits,
    OutboxStats,
    Pending,
    Row,
    fail,
    fail_all,
    is_full,
)
from edge.outbox.prune import Pruner
from edge.outbox.txn import Transactions
from edge.sqlite_thread import SqliteThread

log = logging.getLogger(__name__)


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
        self.hw = 0  # highest seq ever committed

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

    async def insert(self, items: list[Pending], deletes: list[int]) -> list[int]:
        """Commit the items, and `deletes` in the same transaction when it goes through on
        the first try; the deletes not made (to be made on their own)."""
        room = self.limits.budget - self.limits.reserve
        gone: list[Deleted] = []

        def build_and_commit(conn: sqlite3.Connection) -> tuple[*Built, BaseException | bool]:
            # Signing (Ed25519 releases the GIL) happens here, off the event loop, in the
            # same hop as the commit; only when the rows fit is the commit made here too.
            rows, made, failed = self._build(items)
            incoming = sum(len(r.body) + ROW_OVERHEAD for r in rows)
            if not rows or self._usage() + incoming > room or self.disk.full:
                return rows, made, failed, False
            try:
                gone.extend(self._txn.commit(conn, rows, made, deletes))
            except (sqlite3.Error, OSError) as exc:
                return rows, made, failed, exc
            return rows, made, failed, True

        rows, made, failed, outcome = await self._db().run(build_and_commit)
        for it, exc in failed:
            fail(it, exc)
        if outcome is True:
            self._account(gone)
            self.stats.acked += len(deletes)
            deletes = []
        if rows:
            await self._settle(rows, made, outcome, room)
        return deletes

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
            await self._db().run(lambda conn: self._txn.commit(conn, rows, made))
        except (sqlite3.Error, OSError) as exc:
            return exc
        return True

    async def _lift_cap(self) -> None:
        await self._db().execute(f"PRAGMA max_page_count={2 * self.limits.max_bytes // self.page_size}")

    async def _commit(self, rows: list[Row], made: list[Pending]) -> None:
        await self._db().run(lambda conn: self._txn.commit(conn, rows, made))
        self._committed(rows, made)

    def _committed(self, rows: list[Row], made: list[Pending]) -> None:
        self.stats.commits += 1
        self.disk.committed()
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
        if self._on_commit is not None:
            self._on_commit(rows)
