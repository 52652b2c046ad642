"""SMS parts as an SMS provider delivers them, kept in PostgreSQL until their message is
whole (tools/receive/web.py takes the deliveries)."""

from __future__ import annotations

from typing import Any

import psycopg

from drivers.modem.pdu import concat_header, header_size

SMS_PER_SENDER = 16  # messages of one sender waiting for parts; its oldest gives way
SMS_PART_TTL = "1 day"  # a part whose message never completes is dropped after this


def sms_part(conn: psycopg.Connection[Any], sender: str, ud: bytes) -> tuple[bytes | None, bool]:
    """One SMS's user data as an SMS provider delivered it: (the whole message when
    this part completes one, whether this part was heard before). Parts are kept in
    the database, so they meet whichever instance each came to, and survive a restart;
    keyed by sender, reference and count, so two senders' references never mix."""
    head = concat_header(ud)
    if head is None:
        return ud, False
    ref, total, n = head
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{sender}/{ref}/{total}",))
        new = conn.execute(
            "INSERT INTO sms_parts (sender, ref, total, n, body) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            (sender, ref, total, n, ud[header_size(ud) :]),
        ).fetchone()
        pieces = conn.execute(
            "SELECT n, body FROM sms_parts WHERE sender = %s AND ref = %s AND total = %s ORDER BY n",
            (sender, ref, total),
        ).fetchall()
        if len(pieces) == total:
            conn.execute(
                "DELETE FROM sms_parts WHERE sender = %s AND ref = %s AND total = %s",
                (sender, ref, total),
            )
            return b"".join(bytes(body) for _n, body in pieces), new is None
        # a sender spraying parts of messages that never complete crowds out only itself
        conn.execute(
            "DELETE FROM sms_parts p USING (SELECT ref, total FROM sms_parts WHERE sender = %s"
            " GROUP BY ref, total ORDER BY max(received_at) DESC OFFSET %s) old"
            " WHERE p.sender = %s AND p.ref = old.ref AND p.total = old.total",
            (sender, SMS_PER_SENDER, sender),
        )
    return None, new is None


def expire_sms_parts(conn: psycopg.Connection[Any]) -> int:
    """Parts whose message never completed, dropped after a day; how many."""
    with conn.transaction():
        cur = conn.execute(f"DELETE FROM sms_parts WHERE received_at < now() - interval '{SMS_PART_TTL}'")
    return cur.rowcount
