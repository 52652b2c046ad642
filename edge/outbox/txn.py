"""The outbox's transactions, run on the writer's database thread: an insert commit
(durable) and a delete (not: a lost delete is only a duplicate resend)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence

from edge.outbox.model import RESERVE_KEY, SEQ_STATE_KEEP, Deleted, Pending, Row, SeqRecord
from floor.seqkey import seq_key


class Transactions:
    """The statements of one connection, and the synchronous mode it is in."""

    def __init__(self, durable: str) -> None:
        self.durable = durable
        self.sync_mode = ""

    def set_sync(self, conn: sqlite3.Connection, mode: str) -> None:
        if self.sync_mode != mode:
            conn.execute(f"PRAGMA synchronous={mode}")
            self.sync_mode = mode

    def commit(
        self,
        conn: sqlite3.Connection,
        rows: list[Row],
        made: list[Pending],
        deletes: Sequence[int] = (),
        seqs: SeqRecord | None = None,
    ) -> list[Deleted]:
        """Insert the rows and their state records, and delete the acknowledged `deletes`,
        in one durable transaction (with the seqs reserved, `seqs`, when given); the rows
        deleted."""
        at = time.time_ns() // 1_000_000
        params = [
            (r.seq, r.prio, r.kind, it.src, it.tb, r.body, at) for r, it in zip(rows, made, strict=True)
        ]
        states = [it.state for it in made if it.state is not None]
        by_seq = [(r.seq, it.seq_state) for r, it in zip(rows, made, strict=True) if it.seq_state is not None]
        states += [(seq_key(prefix, seq), value) for seq, (prefix, value) in by_seq]
        self.set_sync(conn, self.durable)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO msgs (seq, prio, kind, src, tb, body, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            if states:
                conn.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", states)
            for prefix in {prefix for _seq, (prefix, _v) in by_seq}:
                self._keep_newest(conn, prefix)
            found = self._delete(conn, list(deletes))
            if seqs is not None:
                self._seqs(conn, seqs)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # nothing to roll back
                conn.execute("ROLLBACK")
            raise
        return found

    @staticmethod
    def _seqs(conn: sqlite3.Connection, seqs: SeqRecord) -> None:
        conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (RESERVE_KEY, seqs.encode()))

    def reserve(self, conn: sqlite3.Connection, seqs: SeqRecord) -> None:
        """Record, durably, that seqs up to `high` may be in use and those below `low` are
        saved or acknowledged (one small transaction: a page and an fsync)."""
        self.set_sync(conn, self.durable)
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._seqs(conn, seqs)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _keep_newest(conn: sqlite3.Connection, prefix: str) -> None:
        """Bound the records keyed by seq under `prefix` to the newest SEQ_STATE_KEEP."""
        conn.execute(
            "DELETE FROM state WHERE substr(key, 1, ?1) = ?2 AND key < COALESCE("
            "(SELECT key FROM state WHERE substr(key, 1, ?1) = ?2 ORDER BY key DESC LIMIT 1 OFFSET ?3), '')",
            (len(prefix), prefix, SEQ_STATE_KEEP - 1),
        )

    @staticmethod
    def _delete(conn: sqlite3.Connection, seqs: list[int]) -> list[Deleted]:
        found: list[Deleted] = []
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            cur = conn.execute(
                f"DELETE FROM msgs WHERE seq IN ({marks}) RETURNING seq, prio, LENGTH(body), kind", chunk
            )
            found.extend((int(a), int(b), int(c), str(d)) for a, b, c, d in cur.fetchall())
        return found

    def delete(self, conn: sqlite3.Connection, seqs: list[int]) -> list[Deleted]:
        """Delete rows by seq in one transaction; the rows found.

        A delete lost to a power cut only means a duplicate resend, so deletes do not
        pay for an fsync; the next durable insert commit syncs them anyway."""
        self.set_sync(conn, "NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = self._delete(conn, seqs)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return found
