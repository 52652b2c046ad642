"""The platform's store, in PostgreSQL: the gateway registry, every verified message
once, each epoch's gaps, the time anchors that re-date records, and what each gateway
sent that no consumer can take.

Messages are stored in batches (`add_many`): one transaction, a fixed handful of
statements whatever the batch's size. Exactly once is held by each epoch's row, locked
while a batch changes it: an epoch knows its first and last seq and its open gaps, so a
seq is new only when it lies beyond the ends or inside a gap; anything else is a
redelivery or another bearer's copy (the first bearer is kept in `bearer`). The
epoch's first, last and gaps are thus the set of seqs received, kept in runs. A
life-safety message is announced with `NOTIFY gridedge_life_safety` in the transaction
that stores it, so a listener hears of it exactly when the row is there.

`messages` is partitioned by the day it was received (one table a day, made ahead of
time; a day without one lands in `messages_default`), so old days are dropped as
whole tables (`drop_days_before`). Records are re-dated at reading time by the view
`records_dated`: each epoch's boot (from its `gateway.status` or `time.anchor`) and
each boot's latest trusted anchor give a record stamped with an untrusted clock its
time, `anchor.tu + (tb - anchor.tb)` (tools/redate.py makes the same rule for
`gridedge verify`), so an anchor that arrives late re-dates everything before it with
no rewrite.

A gateway whose signed messages are junk is counted, and quarantined past a
threshold: its messages are then refused, counted, never stored, and nothing it sends
slows the others.

Every change of the schema is a numbered migration, applied once, in order (`migrate`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from floor.envelope import kid_of
from tools.receive import sms

CHANNEL = "gridedge_life_safety"
QUARANTINE_AFTER = 100  # junk messages before a gateway is quarantined
DAYS_AHEAD = 7  # daily partitions made this far ahead (and for yesterday)

MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE gateways (
        gw text PRIMARY KEY,
        public_key bytea NOT NULL UNIQUE,
        kid bytea NOT NULL UNIQUE,
        grp text,
        status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'quarantined', 'retired')),
        junk bigint NOT NULL DEFAULT 0,
        refused bigint NOT NULL DEFAULT 0,
        quarantined_at timestamptz
    );
    CREATE TABLE epochs (
        gw text NOT NULL REFERENCES gateways (gw),
        ep_counter bigint NOT NULL,
        ep_nonce bytea NOT NULL,
        first_seq bigint NOT NULL,
        last_seq bigint NOT NULL,
        received bigint NOT NULL,
        opened_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (gw, ep_counter, ep_nonce)
    );
    CREATE TABLE gaps (
        gw text NOT NULL,
        ep_counter bigint NOT NULL,
        ep_nonce bytea NOT NULL,
        lo bigint NOT NULL,
        hi bigint NOT NULL CHECK (hi >= lo),
        opened_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (gw, ep_counter, ep_nonce, lo),
        FOREIGN KEY (gw, ep_counter, ep_nonce) REFERENCES epochs
    );
    CREATE TABLE messages (
        day date NOT NULL,
        gw text NOT NULL,
        ep_counter bigint NOT NULL,
        ep_nonce bytea NOT NULL,
        seq bigint NOT NULL,
        kind text NOT NULL,
        src text NOT NULL,
        prio smallint NOT NULL,
        tq text NOT NULL,
        bearer text NOT NULL,
        recs jsonb NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (gw, ep_counter, ep_nonce, seq, day)
    ) PARTITION BY RANGE (day);
    CREATE TABLE messages_default PARTITION OF messages DEFAULT;
    CREATE INDEX messages_life_safety ON messages (received_at) WHERE prio = 0;
    CREATE TABLE boots (
        gw text NOT NULL,
        ep_counter bigint NOT NULL,
        ep_nonce bytea NOT NULL,
        boot text NOT NULL,
        PRIMARY KEY (gw, ep_counter, ep_nonce)
    );
    CREATE TABLE anchors (
        gw text NOT NULL,
        boot text NOT NULL,
        tb bigint NOT NULL,
        tu bigint NOT NULL,
        PRIMARY KEY (gw, boot)
    );
    CREATE VIEW records_dated AS
    SELECT m.gw, m.ep_counter, m.ep_nonce, m.seq, m.kind, m.tq, (r.n - 1)::int AS rec,
           (r.rec ->> 'tb')::bigint AS tb, (r.rec ->> 'tu')::bigint AS tu,
           CASE WHEN m.tq IN ('gnss', 'ntp') THEN (r.rec ->> 'tu')::bigint
                ELSE a.tu + ((r.rec ->> 'tb')::bigint - a.tb) END AS tu_dated,
           r.rec -> 'd' AS d, m.received_at
      FROM messages m
      LEFT JOIN boots b USING (gw, ep_counter, ep_nonce)
      LEFT JOIN anchors a ON a.gw = m.gw AND a.boot = b.boot
     CROSS JOIN LATERAL jsonb_array_elements(m.recs) WITH ORDINALITY AS r(rec, n);
    """,
    """
    CREATE TABLE sms_parts (
        sender text NOT NULL,
        ref integer NOT NULL,
        total smallint NOT NULL,
        n smallint NOT NULL,
        body bytea NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (sender, ref, total, n)
    );
    """,
)

TRUSTED_TQ = frozenset({"gnss", "ntp"})
EpochKey = tuple[str, int, bytes]


@dataclass(frozen=True, slots=True)
class Gateway:
    gw: str
    key: Ed25519PublicKey
    status: str


@dataclass(slots=True)
class _Epoch:
    """One epoch's state while a batch changes it."""

    first: int
    last: int
    received: int
    gaps: dict[int, int] = field(default_factory=dict)  # lo -> hi of the gaps the batch may touch
    removed: set[int] = field(default_factory=set)  # gaps (by lo) that were there and are gone
    added: dict[int, int] = field(default_factory=dict)

    def take(self, seq: int) -> bool:
        """Whether `seq` is new to the epoch; its runs updated when it is."""
        if self.received == 0:
            self.first = self.last = seq
        elif seq > self.last:
            if seq > self.last + 1:
                self._open(self.last + 1, seq - 1)
            self.last = seq
        elif seq < self.first:
            if seq < self.first - 1:
                self._open(seq + 1, self.first - 1)
            self.first = seq
        else:
            lo = next((lo for lo, hi in self.gaps.items() if lo <= seq <= hi), None)
            if lo is None:
                return False  # received already
            hi = self._close(lo)
            if lo < seq:
                self._open(lo, seq - 1)
            if seq < hi:
                self._open(seq + 1, hi)
        self.received += 1
        return True

    def _open(self, lo: int, hi: int) -> None:
        self.gaps[lo] = hi
        self.added[lo] = hi

    def _close(self, lo: int) -> int:
        hi = self.gaps.pop(lo)
        if self.added.pop(lo, None) is None:
            self.removed.add(lo)
        return hi


def _jsonable(o: object) -> object:
    return o.hex() if isinstance(o, bytes) else str(o)


def _day(now: dt.datetime) -> dt.date:
    return now.astimezone(dt.UTC).date()


class Store:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._in_batch = False

    @classmethod
    def open(cls, dsn: str) -> Store:
        store = cls(psycopg.connect(dsn))
        store.migrate()
        store.make_days()
        return store

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Several calls in one transaction: all of them committed, or none (the caller
        acknowledges their messages to the broker only after)."""
        with self.conn.transaction():
            self._in_batch = True
            try:
                yield
            finally:
                self._in_batch = False

    def _tx(self) -> contextlib.AbstractContextManager[Any]:
        """A transaction of its own, or none inside a batch (no savepoint per call)."""
        return contextlib.nullcontext() if self._in_batch else self.conn.transaction()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def migrate(self) -> int:
        """Apply the migrations not applied yet, each in its own transaction; the version now."""
        with self.conn.transaction():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS gridedge_schema"
                " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            self.conn.execute("LOCK TABLE gridedge_schema IN EXCLUSIVE MODE")  # two instances start at once
            row = self.conn.execute("SELECT coalesce(max(version), 0) FROM gridedge_schema").fetchone()
            done = int(row[0]) if row else 0
            for version, sql in enumerate(MIGRATIONS[done:], done + 1):
                self.conn.execute(sql.encode())
                self.conn.execute("INSERT INTO gridedge_schema (version) VALUES (%s)", (version,))
        return len(MIGRATIONS)

    # partitions ---------------------------------------------------------------------

    def make_days(self, now: dt.datetime | None = None, ahead: int = DAYS_AHEAD) -> list[dt.date]:
        """Make the daily partitions from yesterday to `ahead` days on (the service calls
        this at start and every hour), before any message needs one; the days there now."""
        today = _day(now or dt.datetime.now(dt.UTC))
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('gridedge_partitions'))")
            for n in range(-1, ahead + 1):
                day = today + dt.timedelta(days=n)
                if self.conn.execute(
                    "SELECT 1 FROM messages_default WHERE day = %s LIMIT 1", (day,)
                ).fetchone():
                    continue  # rows of that day wait in the default partition: it stays there
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS messages_{day:%Y%m%d} PARTITION OF messages"
                    f" FOR VALUES FROM ('{day}') TO ('{day + dt.timedelta(days=1)}')".encode()
                )
        return self.days()

    def days(self) -> list[dt.date]:
        """The days that have a partition of their own."""
        with self._tx():
            rows = self.conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'messages'"
                " AND c.relname ~ '^messages_[0-9]{8}$'"
            ).fetchall()
        return sorted(dt.datetime.strptime(r[0][9:], "%Y%m%d").date() for r in rows)

    def drop_days_before(self, day: dt.date) -> list[dt.date]:
        """Drop whole days of messages older than `day` (retention); the days dropped.
        Exactly-once does not depend on them: the epochs keep which seqs were received."""
        gone = [d for d in self.days() if d < day]
        with self.conn.transaction():
            for d in gone:
                self.conn.execute(f"DROP TABLE messages_{d:%Y%m%d}".encode())
        return gone

    # the registry -------------------------------------------------------------------

    def register(self, gw: str, key: Ed25519PublicKey, *, group: str | None = None) -> None:
        raw = key.public_bytes_raw()
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO gateways (gw, public_key, kid, grp) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (gw) DO UPDATE SET public_key = excluded.public_key, kid = excluded.kid,"
                " grp = excluded.grp",
                (gw, raw, kid_of(key), group),
            )

    def gateways(self) -> dict[bytes, Gateway]:
        """kid -> the gateway it speaks for."""
        with self._tx():
            rows = self.conn.execute("SELECT kid, gw, public_key, status FROM gateways").fetchall()
        return {
            bytes(kid): Gateway(gw, Ed25519PublicKey.from_public_bytes(bytes(raw)), status)
            for kid, gw, raw, status in rows
        }

    # messages -----------------------------------------------------------------------

    def add(self, p: Mapping[str, Any], bearer: str) -> bool:
        """Store one verified message (its payload); True when it is new, False when it
        was there already (a redelivery, another bearer's copy)."""
        return self.add_many([(p, bearer)])[0]

    def add_many(self, items: Sequence[tuple[Mapping[str, Any], str]]) -> list[bool]:
        """Store verified messages (payload, bearer), in one transaction; for each, whether
        it was new."""
        if not items:
            return []
        with self._tx():
            epochs = self._lock_epochs(items)
            new: list[bool] = []
            rows: list[tuple[Any, ...]] = []
            notes: list[str] = []
            day = _day(dt.datetime.now(dt.UTC))
            for p, bearer in items:
                gw, (counter, nonce), seq = p["gw"], p["ep"], p["seq"]
                fresh = epochs[(gw, counter, nonce)].take(seq)
                new.append(fresh)
                if not fresh:
                    continue
                rows.append(
                    (day, gw, counter, nonce, seq, p["kind"], p["src"], p["prio"], p["tq"], bearer,
                     json.dumps(p["recs"], default=_jsonable))
                )  # fmt: skip
                if p["prio"] == 0:
                    note = {"gw": gw, "ep": [counter, nonce.hex()], "seq": seq, "kind": p["kind"]}
                    notes.append(json.dumps(note | {"bearer": bearer}))
            self._write(rows, epochs, notes)
            _learn_time(self.conn, (p for (p, _b), fresh in zip(items, new, strict=True) if fresh))
        return new

    def _lock_epochs(self, items: Sequence[tuple[Mapping[str, Any], str]]) -> dict[EpochKey, _Epoch]:
        """The batch's epochs, their rows locked (made first when new, always in one order
        so two instances never wait on each other in a circle), with the gaps the batch's
        seqs fall in."""
        span: dict[EpochKey, tuple[int, int]] = {}
        for p, _bearer in items:
            key, seq = (p["gw"], p["ep"][0], p["ep"][1]), p["seq"]
            lo, hi = span.get(key, (seq, seq))
            span[key] = (min(lo, seq), max(hi, seq))
        keys = sorted(span)
        gws, counters, nonces = [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]
        firsts = [span[k][0] for k in keys]
        self.conn.execute(
            "INSERT INTO epochs (gw, ep_counter, ep_nonce, first_seq, last_seq, received)"
            " SELECT g, c, n, f, f, 0 FROM unnest(%s::text[], %s::bigint[], %s::bytea[], %s::bigint[])"
            " AS b(g, c, n, f) ORDER BY g, c, n ON CONFLICT DO NOTHING",
            (gws, counters, nonces, firsts),
        )
        epochs: dict[EpochKey, _Epoch] = {}
        for gw, c, n, first, last, received in self.conn.execute(
            "SELECT e.gw, e.ep_counter, e.ep_nonce, e.first_seq, e.last_seq, e.received FROM epochs e"
            " JOIN unnest(%s::text[], %s::bigint[], %s::bytea[]) AS b(g, c, n)"
            " ON e.gw = b.g AND e.ep_counter = b.c AND e.ep_nonce = b.n"
            " ORDER BY e.gw, e.ep_counter, e.ep_nonce FOR UPDATE OF e",
            (gws, counters, nonces),
        ):
            epochs[(gw, int(c), bytes(n))] = _Epoch(int(first), int(last), int(received))
        for gw, c, n, lo, hi in self.conn.execute(
            "SELECT g.gw, g.ep_counter, g.ep_nonce, g.lo, g.hi FROM gaps g"
            " JOIN unnest(%s::text[], %s::bigint[], %s::bytea[], %s::bigint[], %s::bigint[])"
            " AS b(g, c, n, lo, hi)"
            " ON g.gw = b.g AND g.ep_counter = b.c AND g.ep_nonce = b.n AND g.hi >= b.lo AND g.lo <= b.hi",
            (gws, counters, nonces, firsts, [span[k][1] for k in keys]),
        ):
            epochs[(gw, int(c), bytes(n))].gaps[int(lo)] = int(hi)
        return epochs

    def _write(
        self, rows: list[tuple[Any, ...]], epochs: Mapping[EpochKey, _Epoch], notes: list[str]
    ) -> None:
        if rows:
            self.conn.execute(
                "INSERT INTO messages (day, gw, ep_counter, ep_nonce, seq, kind, src, prio, tq, bearer, recs)"
                " SELECT * FROM unnest(%s::date[], %s::text[], %s::bigint[], %s::bytea[], %s::bigint[],"
                " %s::text[], %s::text[], %s::smallint[], %s::text[], %s::text[], %s::jsonb[])",
                [list(c) for c in zip(*rows, strict=True)],
            )
        keys = sorted(epochs)
        self.conn.execute(
            "UPDATE epochs e SET first_seq = b.f, last_seq = b.l, received = b.r"
            " FROM unnest(%s::text[], %s::bigint[], %s::bytea[], %s::bigint[], %s::bigint[], %s::bigint[])"
            " AS b(g, c, n, f, l, r) WHERE e.gw = b.g AND e.ep_counter = b.c AND e.ep_nonce = b.n",
            (
                [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                [epochs[k].first for k in keys], [epochs[k].last for k in keys],
                [epochs[k].received for k in keys],
            ),
        )  # fmt: skip
        gone = [(*k, lo) for k in keys for lo in epochs[k].removed]
        if gone:
            g, c, n, lo = (list(x) for x in zip(*gone, strict=True))
            self.conn.execute(
                "DELETE FROM gaps x"
                " USING unnest(%s::text[], %s::bigint[], %s::bytea[], %s::bigint[]) AS b(g, c, n, lo)"
                " WHERE x.gw = b.g AND x.ep_counter = b.c AND x.ep_nonce = b.n AND x.lo = b.lo",
                (g, c, n, lo),
            )
        made = [(*k, lo, hi) for k in keys for lo, hi in epochs[k].added.items()]
        if made:
            g, c, n, lo, hi = (list(x) for x in zip(*made, strict=True))
            self.conn.execute(
                "INSERT INTO gaps (gw, ep_counter, ep_nonce, lo, hi)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bytea[], %s::bigint[], %s::bigint[])",
                (g, c, n, lo, hi),
            )
        if notes:
            self.conn.execute("SELECT pg_notify(%s, x) FROM unnest(%s::text[]) AS x", (CHANNEL, notes))

    # time ---------------------------------------------------------------------------

    def learn_time(self, payloads: Iterable[Mapping[str, Any]]) -> None:
        """What `gateway.status` and `time.anchor` messages say of their epoch's boot and
        of a trusted instant on the boot's clock (the view `records_dated` uses both)."""
        with self._tx():
            _learn_time(self.conn, payloads)

    def sms_part(self, sender: str, ud: bytes) -> tuple[bytes | None, bool]:
        """One SMS part (tools/receive/sms.py)."""
        return sms.sms_part(self.conn, sender, ud)

    def expire_sms_parts(self) -> int:
        return sms.expire_sms_parts(self.conn)

    def gaps(self, gw: str) -> list[tuple[int, int]]:
        with self._tx():
            rows = self.conn.execute(
                "SELECT lo, hi FROM gaps WHERE gw = %s ORDER BY ep_counter, lo", (gw,)
            ).fetchall()
        return [(int(a), int(b)) for a, b in rows]

    # junk ---------------------------------------------------------------------------

    def junk(self, gw: str, *, threshold: int = QUARANTINE_AFTER) -> str:
        """A signed message of `gw` no consumer can take: counted; the gateway's status now
        (quarantined once it has sent `threshold` of them)."""
        with self._tx():
            row = self.conn.execute(
                "UPDATE gateways SET junk = junk + 1,"
                " status = CASE WHEN junk + 1 >= %s AND status = 'active' THEN 'quarantined' ELSE status END,"
                " quarantined_at = CASE WHEN junk + 1 >= %s AND quarantined_at IS NULL THEN now()"
                " ELSE quarantined_at END WHERE gw = %s RETURNING status",
                (threshold, threshold, gw),
            ).fetchone()
        return str(row[0]) if row else "unknown"

    def refused(self, counts: Mapping[str, int]) -> None:
        """Messages of quarantined (or retired) gateways, counted and not stored."""
        if not counts:
            return
        gws = sorted(counts)
        with self._tx():
            self.conn.execute(
                "UPDATE gateways g SET refused = refused + b.n"
                " FROM unnest(%s::text[], %s::bigint[]) AS b(gw, n) WHERE g.gw = b.gw",
                (gws, [counts[g] for g in gws]),
            )


def _learn_time(conn: psycopg.Connection[Any], payloads: Iterable[Mapping[str, Any]]) -> None:
    """Each epoch's boot and each boot's latest trusted anchor, from the payloads."""
    boots: dict[EpochKey, str] = {}
    anchors: dict[tuple[str, str], tuple[int, int]] = {}
    for p in payloads:
        if p["kind"] not in ("gateway.status", "time.anchor"):
            continue
        for rec in p["recs"]:
            d = rec["d"]
            boot = d.get("boot")
            if not isinstance(boot, str) or not boot:
                continue
            boots[(p["gw"], p["ep"][0], p["ep"][1])] = boot
            tb, tu = d.get("tb"), d.get("tu")
            if (
                p["kind"] == "time.anchor"
                and d.get("tq") in TRUSTED_TQ
                and type(tb) is int
                and type(tu) is int
            ):
                anchors[(p["gw"], boot)] = (tb, tu)
    if boots:
        keys = sorted(boots)
        conn.execute(
            "INSERT INTO boots SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bytea[], %s::text[])"
            " ON CONFLICT (gw, ep_counter, ep_nonce) DO UPDATE SET boot = excluded.boot",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [boots[k] for k in keys]),
        )
    if anchors:
        akeys = sorted(anchors)
        conn.execute(
            "INSERT INTO anchors SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[])"
            " ON CONFLICT (gw, boot) DO UPDATE SET tb = excluded.tb, tu = excluded.tu",
            (
                [k[0] for k in akeys], [k[1] for k in akeys],
                [anchors[k][0] for k in akeys], [anchors[k][1] for k in akeys],
            ),
        )  # fmt: skip
