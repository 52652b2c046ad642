"""The platform's store, in PostgreSQL: the gateway registry, every verified message
once, each epoch's gaps, and what each gateway sent that no consumer can take.

A message is keyed by `(gw, ep counter, ep nonce, seq)`: a broker's redelivery, or the
SMS or BeiDou copy of an alarm, is the same row (the first bearer to bring it is kept
in `bearer`). Within an epoch, a seq beyond the last one seen opens a gap; a late
message closes the part of the gap it fills. A life-safety message is announced with
`NOTIFY gridedge_life_safety` in the transaction that stores it, so a listener hears of
it exactly when the row is there. A gateway whose signed messages are junk is counted,
and quarantined past a threshold: its messages are then refused, counted, never stored,
and nothing it sends slows the others.

Every change of the schema is a numbered migration, applied once, in order (`migrate`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from floor.envelope import kid_of

CHANNEL = "gridedge_life_safety"
QUARANTINE_AFTER = 100  # junk messages before a gateway is quarantined

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
    CREATE TABLE messages (
        gw text NOT NULL REFERENCES gateways (gw),
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
        PRIMARY KEY (gw, ep_counter, ep_nonce, seq)
    );
    CREATE INDEX messages_life_safety ON messages (received_at) WHERE prio = 0;
    CREATE TABLE epochs (
        gw text NOT NULL REFERENCES gateways (gw),
        ep_counter bigint NOT NULL,
        ep_nonce bytea NOT NULL,
        first_seq bigint NOT NULL,
        last_seq bigint NOT NULL,
        received bigint NOT NULL,
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
    """,
)


@dataclass(frozen=True, slots=True)
class Gateway:
    gw: str
    key: Ed25519PublicKey
    status: str


def _jsonable(o: object) -> object:
    return o.hex() if isinstance(o, bytes) else str(o)


class Store:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._in_batch = False

    @classmethod
    def open(cls, dsn: str) -> Store:
        store = cls(psycopg.connect(dsn))
        store.migrate()
        return store

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many messages in one transaction: all of them committed, or none (the caller
        acknowledges them to the broker only after)."""
        with self.conn.transaction():
            self._in_batch = True
            try:
                yield
            finally:
                self._in_batch = False

    def _tx(self) -> contextlib.AbstractContextManager[Any]:
        """A transaction of its own, or none inside a batch (no savepoint per message)."""
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
        """Store one verified message (its payload); True when it is new, False when the
        row was there already (a redelivery, another bearer's copy)."""
        gw, (counter, nonce), seq = p["gw"], p["ep"], p["seq"]
        recs = json.dumps(p["recs"], default=_jsonable)
        with self._tx():
            new = self.conn.execute(
                "INSERT INTO messages (gw, ep_counter, ep_nonce, seq, kind, src, prio, tq, bearer, recs)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (gw, counter, nonce, seq, p["kind"], p["src"], p["prio"], p["tq"], bearer, recs),
            ).fetchone()
            if new is None:
                return False
            self._sequence(gw, counter, nonce, seq)
            if p["prio"] == 0:
                note = {
                    "gw": gw,
                    "ep": [counter, nonce.hex()],
                    "seq": seq,
                    "kind": p["kind"],
                    "bearer": bearer,
                }
                self.conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(note)))
        return True

    def _sequence(self, gw: str, counter: int, nonce: bytes, seq: int) -> None:
        """The epoch's last seq and its gaps, as this message changes them."""
        key = (gw, counter, nonce)
        row = self.conn.execute(
            "SELECT last_seq FROM epochs WHERE gw = %s AND ep_counter = %s AND ep_nonce = %s FOR UPDATE", key
        ).fetchone()
        if row is None:
            self.conn.execute(
                "INSERT INTO epochs (gw, ep_counter, ep_nonce, first_seq, last_seq, received)"
                " VALUES (%s, %s, %s, %s, %s, 1)",
                (*key, seq, seq),
            )
            return
        last = int(row[0])
        self.conn.execute(
            "UPDATE epochs SET received = received + 1, last_seq = greatest(last_seq, %s),"
            " first_seq = least(first_seq, %s) WHERE gw = %s AND ep_counter = %s AND ep_nonce = %s",
            (seq, seq, *key),
        )
        if seq > last + 1:
            self.conn.execute(
                "INSERT INTO gaps (gw, ep_counter, ep_nonce, lo, hi) VALUES (%s, %s, %s, %s, %s)",
                (*key, last + 1, seq - 1),
            )
            return
        gap = self.conn.execute(
            "DELETE FROM gaps WHERE gw = %s AND ep_counter = %s AND ep_nonce = %s AND lo <= %s AND hi >= %s"
            " RETURNING lo, hi",
            (*key, seq, seq),
        ).fetchone()
        if gap is not None:  # a late message: what is left of its gap stays open
            lo, hi = int(gap[0]), int(gap[1])
            for a, b in ((lo, seq - 1), (seq + 1, hi)):
                if a <= b:
                    self.conn.execute(
                        "INSERT INTO gaps (gw, ep_counter, ep_nonce, lo, hi) VALUES (%s, %s, %s, %s, %s)",
                        (*key, a, b),
                    )

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

    def refused(self, gw: str) -> None:
        """A message of a quarantined (or retired) gateway, counted and not stored."""
        with self._tx():
            self.conn.execute("UPDATE gateways SET refused = refused + 1 WHERE gw = %s", (gw,))
