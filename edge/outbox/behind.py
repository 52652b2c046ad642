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
(`low`). A start after a crash reports the seqs between the two that are not in the
outbox as `outbox.dropped` (`unsaved`: those the platform has arrived whole, the rest
are lost) and numbers from `high + 1`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.outbox.model import Pending, Row


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

    def take(self, now: float | None = None) -> list[Waiting]:
        """Those due by `now` (all with None), oldest first, to be written."""
        out = [w for w in self.by_seq.values() if now is None or w.due <= now]
        for w in out:
            self.acked(w.row.seq)
        return out

    def take_seqs(self, seqs: set[int]) -> list[Waiting]:
        out = [w for s, w in self.by_seq.items() if s in seqs]
        for w in out:
            self.acked(w.row.seq)
        return out
