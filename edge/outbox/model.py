"""The outbox's data: its schema, limits, rows, statistics and errors (edge/outbox/)."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from floor.errors import PermanentError
from floor.kinds import Prio

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
SEQ_STATE_KEEP = 256  # records keyed by seq kept per prefix (Pending.seq_state)
ROW_OVERHEAD = 64  # bytes a row costs beyond its body (row header, kind, src, index entry)
# Never thinned, and admitted into the reserve: a gap or a full disk must never be silent.
PROTECTED_KINDS = frozenset({"outbox.dropped", "gateway.health"})
DECIMATE = 8  # thinning keeps every 8th telemetry message as a coarse track
MAX_RANGES_PER_REPORT = 500
SWEEP_S = 30.0  # TTL and disk-recovery checks
FULL_SWEEP_S = 2.0  # ...every 2 s while the disk is full, so telemetry resumes soon after
RESERVE_STEPS = 8  # the disk reserve is given up an eighth at a time, as alarms need it
MAX_HELD = 4096  # protected messages held in memory on a full disk, at most (see Outbox._hold)
HELD = "disk full and its reserve used up: life-safety held in memory until there is room"
DELETE_BATCH = 512  # acknowledged deletes worth a transaction at once
DELETE_GATHER_S = 0.02
DELETE_CHUNK = 64  # rows per delete transaction
CHECKPOINT_S = 0.5  # how often the checkpointer looks at the WAL
CHECKPOINT_ROWS = 1000  # rows written or deleted since the last checkpoint: copy the WAL back...
CHECKPOINT_MAX_S = 60.0  # ...and a smaller one after this long: a page rewritten many times
# (the last leaf, the lane index, the sequence) reaches the database file once, not each time
GROUP_MAX = 64  # queued messages that commit at once, whatever their age (a busy pipeline)
DELETE_LINGER_S = 5.0  # acknowledged deletes wait this long for a commit to ride along with
QUEUE_HIGH = 128  # queued messages before producers are made to wait (bounds memory)
# Write-behind (edge/outbox/behind.py): messages published before they are written, and
# written only if the broker has not acknowledged them when their commit is due.
UNSAVED_MAX_BYTES = 2 * 1024 * 1024  # beyond this, new messages are written at once
RESERVE_KEY = "outbox.seqs"  # the state row: seqs below `low` are saved or acknowledged; `high` reserved
RESERVE_MIN = 64  # seqs reserved at a time (the chunk adapts: about one durable write in 15-60 s)
RESERVE_MAX = 65536
RESERVE_FAST_S = 15.0  # a reservation used up sooner than this: the next is twice the size
RESERVE_SLOW_S = 60.0  # ...later than this: half the size
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
    # A record keyed by the message's own seq (prefix, value), committed with it under
    # `seq_key(prefix, seq)`: what a later command naming that seq needs (an sos.ack needs
    # the alarm's wearable and counter). The newest SEQ_STATE_KEEP of a prefix are kept.
    seq_state: tuple[str, bytes] | None = None
    durable: bool = False  # its producer must know it is on disk (Outbox.append), not only numbered
    queued_at: float = 0.0  # loop time it was queued: its commit is due `group_commit_s` later

    @property
    def protected(self) -> bool:
        return self.prio == Prio.LIFE_SAFETY or self.kind in PROTECTED_KINDS

    @property
    def may_wait(self) -> bool:
        """Whether it may be published before it is written (write-behind): not an alarm nor
        a drop or health report, nothing committed with it, nobody waiting for the disk."""
        return not (self.protected or self.durable or self.state is not None or self.seq_state is not None)


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    prio: int
    kind: str
    body: bytes
    at: int = 0  # when it was committed (unix ms), as read back from the outbox


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
    delete_commits: int = 0  # transactions of deletes alone (not folded into a commit)
    unsaved: int = 0  # messages published before being written (write-behind)
    acked_unsaved: int = 0  # ...and acknowledged in time: never written
    saved_late: int = 0  # ...and written: not acknowledged when their commit was due, or the link went
    reservations: int = 0  # durable writes of the seqs reserved (RESERVE_KEY) on their own
    dropped: int = 0
    refused: int = 0
    lanes: dict[int, LaneStats] = field(default_factory=lambda: {p: LaneStats() for p in Prio})

    @property
    def writes(self) -> int:
        """Rows written or deleted, and seqs reserved, so far (what the checkpointer follows)."""
        return self.committed + self.acked + self.reservations


@dataclass(frozen=True, slots=True)
class SeqRecord:
    """What the outbox records of the seqs it gives (RESERVE_KEY): up to `high` may be given;
    below `low` every one is written, acknowledged or never given; `written`, ranges of
    seqs from `low` up that were written first (an alarm): never reported lost, even once
    acknowledged and deleted. Settled (nothing outstanding) when low > high."""

    low: int
    high: int
    written: tuple[tuple[int, int], ...] = ()

    def encode(self) -> bytes:
        extra = ",".join(f"{a}-{b}" for a, b in self.written)
        return f"{self.low} {self.high} {extra}".strip().encode()

    @classmethod
    def decode(cls, raw: bytes) -> SeqRecord:
        """ValueError for anything else."""
        parts = raw.decode("ascii").split()
        if len(parts) not in (2, 3):
            raise ValueError("not a seq record")
        spans = parts[2].split(",") if len(parts) == 3 else []
        written = tuple((int(a), int(b)) for a, _, b in (x.partition("-") for x in spans))
        return cls(int(parts[0]), int(parts[1]), written)

    @property
    def settled(self) -> bool:
        return self.low > self.high


@dataclass(frozen=True, slots=True)
class Limits:
    """Disk budget and per-kind TTLs."""

    max_bytes: int = 256 * 1024 * 1024
    ttl_s: Mapping[str, int] = field(default_factory=dict)
    # Telemetry waits up to this long to share one durable commit (one fsync, the pages
    # written once) with what else arrives meanwhile; alarms and events never wait.
    group_commit_s: float = 0.0

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
    return range_reports(ranges(s for s, _ in dropped), reason, dict(Counter(k for _, k in dropped)))


def range_reports(
    rs: list[list[int]], reason: str, kinds: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """`outbox.dropped` records for seq ranges, at most MAX_RANGES_PER_REPORT each."""
    total = sum(b - a + 1 for a, b in rs)
    out = []
    for i in range(0, len(rs), MAX_RANGES_PER_REPORT):
        part = rs[i : i + MAX_RANGES_PER_REPORT]
        out.append(
            {
                "reason": reason,
                "count": sum(b - a + 1 for a, b in part),
                "ranges": part,
                "kinds": (kinds or {}) if i == 0 else {},
                "total": total,
            }
        )
    return out


def sqlite_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of an error (extended codes carry it in the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and sqlite_code(exc) == SQLITE_FULL


def fail(it: Pending, exc: BaseException) -> None:
    if it.done is not None and not it.done.done():
        it.done.set_exception(exc)


def fail_all(items: list[Pending], exc: BaseException) -> None:
    for it in items:
        fail(it, exc)
