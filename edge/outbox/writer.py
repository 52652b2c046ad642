"""The outbox's single writer: the queue of messages and acknowledged deletes, and the
commits that number, sign and store them (see edge/outbox/__init__.py for the theory).

One state machine driven from one task: the queue, the outcome of each commit
(committed, refused, held for a full disk, renumbered), the seq counters and the lane
accounting. The transactions themselves are txn.py's; thinning and expiry prune.py's;
the numbering and the commits commit.py's; the full disk fulldisk.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from edge.outbox.behind import Live, Unsaved, WriteBehind
from edge.outbox.commit import Committer
from edge.outbox.fulldisk import FullDisk
from edge.outbox.model import (
    DELETE_BATCH,
    DELETE_CHUNK,
    DELETE_GATHER_S,
    DELETE_LINGER_S,
    FULL_SWEEP_S,
    GROUP_MAX,
    QUEUE_HIGH,
    SWEEP_S,
    Deleted,
    Limits,
    OutboxStats,
    Pending,
    Row,
    drop_reports,
    is_full,
)
from edge.outbox.prune import Pruner
from edge.outbox.txn import Transactions
from edge.sqlite_thread import SqliteThread
from floor.kinds import Prio

log = logging.getLogger(__name__)
T = TypeVar("T")


class Writer:
    """The queue and the loop that commits it; acknowledged, thinned and expired deletes."""

    def __init__(
        self,
        *,
        limits: Limits,
        txn: Transactions,
        stats: OutboxStats,
        disk: FullDisk,
        db: Callable[[], SqliteThread],
        usage: Callable[[], int],
        on_commit: Callable[[list[Row]], None] | None = None,
        on_dropped: Callable[[dict[str, Any]], object] | None = None,
        live: Live | None = None,
    ) -> None:
        self.limits = limits
        self._txn = txn
        self.stats = stats
        self.disk = disk
        self._db = db
        self._usage = usage
        self._on_dropped = on_dropped  # `outbox.dropped` records, when rows were thinned or expired
        self.queue: list[Pending] = []
        self.acks: list[int] = []
        self._wake = asyncio.Event()
        self._items = asyncio.Event()  # a message (not only a delete) is waiting
        self._urgent = False  # a queued message may not wait for a group commit
        self._busy = False  # the last flush was a full one: a busy stream needs no lingering
        self._queued_at = 0.0  # loop time the oldest queued message arrived
        self._acked_at = 0.0  # loop time the oldest waiting delete arrived
        self._drained = asyncio.Event()  # the writer took the queue (see room())
        self.wrote = asyncio.Event()  # rows were written or deleted (the checkpointer looks)
        self.lock = asyncio.Lock()  # one flush at a time, even across cancellation
        self.pruner = Pruner(self._fetch_any, self._delete_txn, self._report)
        self.commits = Committer(
            limits=limits,
            txn=txn,
            stats=stats,
            disk=disk,
            db=db,
            usage=usage,
            pruner=self.pruner,
            account=self._account,
            on_commit=lambda rows: self.behind.announce(rows),  # noqa: PLW0108 (made below)
        )
        self.behind = WriteBehind(
            limits=limits, commits=self.commits, disk=disk, stats=stats, report=self._report, live=live
        )
        self.behind.on_commit = on_commit

    @property
    def unsaved(self) -> Unsaved:
        """Published, not written (edge/outbox/behind.py)."""
        return self.behind.unsaved

    # producers -------------------------------------------------------------------

    def submit(self, item: Pending) -> asyncio.Future[int]:
        """Queue a message; the future resolves with its seq once it is committed."""
        loop = asyncio.get_running_loop()
        if item.done is None:
            item.done = loop.create_future()
        item.queued_at = loop.time()
        if not self.queue:
            self._queued_at = item.queued_at
        # an alarm or an event commits at once; a message that will not be written unless
        # it stays unacknowledged is numbered and published at once
        if item.prio < Prio.TELEMETRY or item.protected or (item.may_wait and self.behind.on()):
            self._urgent = True
        self.queue.append(item)
        self._wake.set()
        self._items.set()
        return item.done

    async def room(self) -> None:
        """Backpressure for producers: wait while the writer is far behind (bounded memory)."""
        while len(self.queue) >= QUEUE_HIGH:
            self._drained.clear()
            await self._drained.wait()

    def ack(self, seqs: Iterable[int]) -> None:
        """The broker has these: forget those never written, delete the rest with the next
        commit."""
        rows = self.behind.acked(seqs)
        if not rows:
            return
        if not self.acks:
            self._acked_at = asyncio.get_running_loop().time()
        self.acks.extend(rows)
        self._wake.set()

    def link_down(self) -> None:
        """The link went: what was published and not written is written now."""
        if self.behind.link_down():
            self._wake.set()

    async def save_unsaved(self) -> None:
        """Write everything published and not yet written (a new session reads the outbox)."""
        async with self.lock:
            await self.behind.save(self.unsaved.take())

    # the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Group-commits queued messages and acknowledged deletes."""
        loop = asyncio.get_running_loop()
        last_sweep = loop.time()
        while True:
            next_sweep = last_sweep + (FULL_SWEEP_S if self.disk.full else SWEEP_S)
            due = self.unsaved.due_at()
            wake_at = next_sweep if due is None else min(next_sweep, due)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake_at - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            await self._linger()
            # Shielded: a cancelled commit would leave the transaction open and the
            # producers' futures unresolved; closing waits for it on the lock instead.
            await asyncio.shield(self.flush())
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
            due = self.unsaved.due_at()
            if self._urgent or self.disk.held or len(self.queue) >= GROUP_MAX:
                return
            if due is not None and due <= loop.time():
                return
            if self.queue:
                if group <= 0:
                    return
                deadline = self._queued_at + group
            elif self.acks and len(self.acks) < DELETE_BATCH:
                # only deletes: let them gather (one transaction instead of many)
                deadline = self._acked_at + (DELETE_LINGER_S if group > 0 else DELETE_GATHER_S)
            else:
                return
            if due is not None:
                deadline = min(deadline, due)
            if loop.time() >= deadline:
                return
            self._items.clear()
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    await self._items.wait()
            except TimeoutError:
                return

    async def flush(self, *, final: bool = False) -> None:
        """Commit what is queued now (and the deletes due, and what was published and not
        acknowledged by the time its commit was due)."""
        before = self.stats.writes
        try:
            await self._flush(final=final)
        finally:
            if self.stats.writes != before:
                self.wrote.set()

    async def _flush(self, *, final: bool) -> None:
        async with self.lock:
            loop = asyncio.get_running_loop()
            # the unsaved due first: they are older than anything queued
            await self.behind.save(self.unsaved.take(None if final else loop.time()))
            items, self.queue = self.queue, []
            items[:0] = self.disk.take_held()
            self._urgent = False
            # Deletes alone wait for a commit to ride along with (see _linger), unless
            # there are many, or they have waited long enough, or the outbox is closing.
            lingered = asyncio.get_running_loop().time() >= self._acked_at + DELETE_LINGER_S
            take = items or final or self.limits.group_commit_s <= 0 or self._busy or lingered
            if take or len(self.acks) >= DELETE_BATCH:
                acks, self.acks = self.acks, []
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
                unfolded = await self.behind.insert(items, fold, behind=not final and self.behind.on())
                acks[:0] = unfolded
            # Deletes go in small transactions, and stop as soon as a new message is
            # queued: an alarm waits for at most one small delete, never for a drain's worth.
            if acks:
                await self._delete_acked(acks)

    async def close(self) -> None:
        """The last flush: everything queued and unsaved written, the seqs settled."""
        await self.flush(final=True)
        async with self.lock:
            if not self.unsaved and not self.disk.held:
                try:
                    await self.commits.settle_seqs()
                except (sqlite3.Error, OSError) as exc:
                    log.warning("outbox: cannot record the seqs settled at close: %s", exc)

    async def sweep(self, now_ms: int | None = None) -> None:
        """Expire rows past their kind's TTL; leave degraded mode when the disk has room."""
        async with self.lock:
            await self.pruner.expire(
                self.limits.ttl_s, now_ms if now_ms is not None else time.time_ns() // 1_000_000
            )
            if self.disk.degraded and self.disk.reserve.free() > 2 * self.limits.reserve:
                self.disk.full = False
                page_size = self.commits.page_size
                await self._db().execute(f"PRAGMA max_page_count={self.limits.budget // page_size}")
                self.disk.ensure_reserve()
            if self.disk.held:
                self._wake.set()  # retry them now

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
                if self.queue:  # read across threads: a list's length, safe under the GIL
                    break
            return found, done, None

        found, done, exc = await self._db().run(delete)
        self.stats.delete_commits += 1
        self._account(found)
        self.stats.acked += done
        if done < len(acks):
            self.acks[:0] = acks[done:]  # retried with the next flush
            if exc is None or not is_full(exc):
                self._wake.set()
        if exc is not None:
            if not is_full(exc):
                log.error("outbox: delete of %d acknowledged messages failed: %s", len(acks) - done, exc)
            else:
                # The WAL cannot grow: the deletes wait (their rows may be sent again, which
                # the platform deduplicates) and, like inserts, the disk is treated as full.
                self.disk.filled(exc)

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
        return self._account(await self._db().run(lambda conn: self._txn.delete(conn, seqs)))

    def _report(self, dropped: list[tuple[int, str]], reason: str) -> None:
        self.stats.dropped += len(dropped)
        if self._on_dropped is not None:
            for rec in drop_reports(dropped, reason):
                self._on_dropped(rec)

    async def _fetch_any(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return await self._db().fetchall(sql, params)
