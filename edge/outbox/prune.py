"""Making room, and forgetting what is too old: thinning when the outbox is full (what
matters least first, oldest first) and TTL expiry. Every drop is reported."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from edge.outbox.model import DECIMATE, PROTECTED_KINDS, ROW_OVERHEAD
from floor.kinds import Prio

log = logging.getLogger(__name__)

THIN_PHASES = (
    # telemetry and bulk, keeping a decimated track and each source's latest message
    f"prio >= {int(Prio.TELEMETRY)} AND seq % {DECIMATE} != 0 AND seq NOT IN "
    f"(SELECT MAX(seq) FROM msgs WHERE prio >= {int(Prio.TELEMETRY)} GROUP BY kind, src)",
    # then the decimated track too (still keeping each source's latest)
    f"prio >= {int(Prio.TELEMETRY)} AND seq NOT IN "
    f"(SELECT MAX(seq) FROM msgs WHERE prio >= {int(Prio.TELEMETRY)} GROUP BY kind, src)",
    # then events, oldest first; never a drop report
    f"prio = {int(Prio.EVENT)} AND kind NOT IN ({', '.join(repr(k) for k in PROTECTED_KINDS)})",
)

Fetch = Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]]
Delete = Callable[[list[int]], Awaitable[list[tuple[int, int, str]]]]
Report = Callable[[list[tuple[int, str]], str], None]


class Pruner:
    """Drops rows through the writer's own delete path, and says which."""

    def __init__(self, fetch: Fetch, delete: Delete, report: Report) -> None:
        self._fetch = fetch
        self._delete = delete
        self._report = report

    async def thin(self, need: int) -> None:
        """Free at least `need` bytes by dropping what matters least, oldest first."""
        dropped: list[tuple[int, str]] = []
        freed = 0
        for where in THIN_PHASES:
            while freed < need:
                batch = await self._fetch(
                    f"SELECT seq, LENGTH(body) FROM msgs WHERE {where} ORDER BY seq LIMIT 2000", ()
                )
                if not batch:
                    break
                chosen: list[int] = []
                for seq, nbytes in batch:
                    chosen.append(int(seq))
                    freed += int(nbytes) + ROW_OVERHEAD
                    if freed >= need:
                        break
                try:
                    gone = await self._delete(chosen)
                except (sqlite3.Error, OSError) as exc:
                    log.error("outbox: thinning failed: %s", exc)
                    return
                dropped.extend((s, k) for s, _, k in gone)
            if freed >= need:
                break
        if dropped:
            log.warning("outbox: full; dropped %d messages to make room", len(dropped))
            self._report(dropped, "full")

    async def expire(self, ttl_s: Mapping[str, int], now_ms: int) -> None:
        """Drop rows of each kind older than its TTL (never life-safety)."""
        dropped: list[tuple[int, str]] = []
        for kind, ttl in ttl_s.items():
            old = await self._fetch(
                "SELECT seq FROM msgs WHERE kind = ? AND prio > 0 AND at < ? LIMIT 50000",
                (kind, now_ms - ttl * 1000),
            )
            seqs = [int(r[0]) for r in old]
            if seqs:
                try:
                    gone = await self._delete(seqs)
                except (sqlite3.Error, OSError) as exc:
                    log.error("outbox: TTL expiry failed: %s", exc)
                    return
                dropped.extend((s, k) for s, _, k in gone)
        if dropped:
            self._report(dropped, "ttl")
