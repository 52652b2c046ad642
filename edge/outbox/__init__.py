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

The parts: `model` (schema, limits, rows, errors), `store` (`Outbox`: its lifetime,
interface and reader), `writer` (the single writer: the queue and the commits), `txn`
(the insert and delete transactions, on the writer's thread), `prune` (thinning and TTL
expiry), `fulldisk` and `reserve` (a full disk and the reserve file), `opening` and
`checkpoint`.
"""

from edge.outbox.model import (
    PROTECTED_KINDS,
    ROW_OVERHEAD,
    CorruptOutbox,
    LaneStats,
    Limits,
    OutboxFull,
    OutboxStats,
    OutboxUnavailable,
    Pending,
    Row,
    drop_reports,
    ranges,
)
from edge.outbox.store import Outbox, OutboxHooks

__all__ = [
    "PROTECTED_KINDS",
    "ROW_OVERHEAD",
    "CorruptOutbox",
    "LaneStats",
    "Limits",
    "Outbox",
    "OutboxFull",
    "OutboxHooks",
    "OutboxStats",
    "OutboxUnavailable",
    "Pending",
    "Row",
    "drop_reports",
    "ranges",
]
