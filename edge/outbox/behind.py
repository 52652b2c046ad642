"""Write-behind: messages published before they are written, and written only if the
broker has not acknowledged them when their commit is due.

On a healthy link the broker acknowledges a message within milliseconds, and writing it
to SQLite, checkpointing it and deleting it again is an SD card's wear for nothing. So a
message that may wait (`Pending.may_wait`: not an alarm, nothing committed with it, no
producer waiting for the disk) is numbered, signed and handed to the publisher at once,
and kept here, in memory, until its PUBACK (then it is forgotten: never written) or until
its commit is due (`group_commit_s` after it was queued), the link goes down or the
outbox closes (then it is written, and deleted on its PUBACK as any row). What a power
cut can cost is what it cost before: the messages younger than `group_commit_s`.

Its seq is spent before it is on disk, so a seq must never be given twice, even after a
power cut: the writer records in the outbox, durably and before it publishes past it,
the highest seq it may give (`high`, a chunk ahead) and the lowest that may not be saved
(`low`), and with each commit of written rows meanwhile, their seqs (an alarm's: it is
never reported lost). A start after a crash reports the seqs between `low` and `high`
that are neither in the outbox nor listed as `outbox.dropped` (`unsaved`: those the
platform has arrived whole, the rest are lost) and numbers from `high + 1`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from edge.outbox.commit import Committer
from edge.outbox.fulldisk import FullDisk
from edge.outbox.model import UNSAVED_MAX_BYTES, Limits, OutboxStats, Pending, Row


class Live(Protocol):
    """Who publishes what the outbox numbers (the publisher): it may take messages that are
    not yet written."""

    def accepting(self) -> bool:
        """Whether messages handed over now would be sent at once (the link is up)."""
        ...

    def take(self, rows: list[Row], unsaved: frozenset[int]) -> list[Row]:
        """Rows just numbered, oldest first: those in `unsaved` are not written yet. The ones
        of those it cannot take now (to be written, then announced with `saved`)."""
        ...

    def saved(self, rows: list[Row]) -> None:
        """Rows it could not take are now written (read them back from the outbox)."""
        ...


@dataclass(slots=True)
class Waiting:
    row: Row
    item: Pending
    due: float  # loop time its commit is due


class Unsaved:
    """The messages published (or about to be) and not written, by seq, oldest first."""

    def __init__(self) -> None:
        self.by_seq: dict[int, Waiting] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.by_seq)

    def add(self, row: Row, item: Pending, due: float) -> None:
        self.by_seq[row.seq] = Waiting(row, item, due)
        self.bytes += len(row.body)

    def acked(self, seq: int) -> bool:
        """Forget it (the broker has it): whether it was here."""
        w = self.by_seq.pop(seq, None)
        if w is None:
            return False
        self.bytes -= len(w.row.body)
        return True

    def lowest(self) -> int | None:
        return next(iter(self.by_seq), None)

    def due_at(self) -> float | None:
        """When the next commit is due (a handful of messages: a scan is cheap)."""
        return min((w.due for w in self.by_seq.values()), default=None)

    def take(self, now: float | None = None, seqs: set[int] | None = None) -> list[Waiting]:
        """Those due by `now` (or of `seqs`; all with neither), oldest first, to be written."""
        out = [
            w for s, w in self.by_seq.items() if (now is None or w.due <= now) and (seqs is None or s in seqs)
        ]
        for w in out:
            self.acked(w.row.seq)
        return out


class WriteBehind:
    """The writer's half that decides what is published before it is written, hands it
    over, and writes it when it must (always on the writer's task, under its lock)."""

    def __init__(
        self,
        *,
        limits: Limits,
        commits: Committer,
        disk: FullDisk,
        stats: OutboxStats,
        report: Callable[[list[tuple[int, str]], str], None],
        live: Live | None,
    ) -> None:
        self.limits, self.commits, self.disk, self.stats = limits, commits, disk, stats
        self._report = report  # seqs spent on messages that could not be written
        self.live = live
        self.on_commit: Callable[[list[Row]], None] | None = None  # the rest of the gateway
        self.unsaved = Unsaved()

    def on(self) -> bool:
        """Whether messages that may wait are published before they are written now."""
        live = self.live
        return (
            live is not None
            and self.limits.group_commit_s > 0
            and self.unsaved.bytes < UNSAVED_MAX_BYTES
            and not self.disk.full
            and live.accepting()
        )

    def acked(self, seqs: Iterable[int]) -> list[int]:
        """Forget the acknowledged that were never written; the seqs of those that were."""
        unsaved = self.unsaved
        rows = []
        for seq in seqs:
            if unsaved.by_seq and unsaved.acked(seq):
                self.stats.acked_unsaved += 1
            else:
                rows.append(seq)
        return rows

    def link_down(self) -> bool:
        """Everything unsaved is due now; whether there is any."""
        for w in self.unsaved.by_seq.values():
            w.due = 0.0
        return bool(self.unsaved)

    async def insert(self, items: list[Pending], deletes: list[int], *, behind: bool) -> list[int]:
        """Commit the items (those that may wait, with `behind`, only numbered, signed and
        handed to the publisher); the deletes not made."""
        done = await self.commits.insert(items, deletes, behind=behind, low=self.unsaved.lowest())
        rows, wait = done.now.rows, done.wait
        if not wait.rows:
            if rows:
                self.announce(rows)
            return done.deletes
        due = self.limits.group_commit_s
        for r, it in zip(wait.rows, wait.made, strict=True):
            self.unsaved.add(r, it, it.queued_at + due)
        if rows and self.on_commit is not None:
            self.on_commit(rows)  # the rest of the gateway hears of committed rows (alarms)
        assert self.live is not None  # behind is only asked for with a publisher
        # one hand-over, oldest first: a lane's rows reach the publisher in their order
        both = sorted(rows + wait.rows, key=lambda r: r.seq)
        refused = self.live.take(both, frozenset(r.seq for r in wait.rows))
        if refused:
            # not taken (its lane reads the outbox, or the link went): written now, then read
            await self.save(self.unsaved.take(seqs={r.seq for r in refused}))
            self.live.saved(refused)
        return done.deletes

    def announce(self, rows: list[Row]) -> None:
        """Rows just committed: to the publisher, and to the rest of the gateway."""
        if self.live is not None:
            self.live.take(rows, frozenset())
        if self.on_commit is not None:
            self.on_commit(rows)

    async def save(self, waiting: list[Waiting]) -> None:
        """Write published messages (their commit came due, or the link went); what cannot
        be written is reported: its seq is spent."""
        if not waiting:
            return
        rows, made = [w.row for w in waiting], [w.item for w in waiting]
        lost = await self.commits.save(rows, made, settled=not self.unsaved)
        if lost:
            self._report(lost, "full")
