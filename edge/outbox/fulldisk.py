"""The outbox on a full disk: what may be lost is refused, what may not uses the disk
reserve a step at a time, and what even that cannot hold waits in memory, bounded.

A disk that fills for other reasons (ENOSPC, or SQLite's page cap) is met with the
reserve file (reserve.py); other messages are refused (counted, no seq spent, logged
once per episode) and the health goes `degraded` until there is room again. When the
reserve is used up too, protected messages (life-safety, drop and health reports) are
held here, unnumbered, and retried with every commit, in order.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from edge.outbox.model import HELD, MAX_HELD, OutboxFull, OutboxStats, Pending, Row, fail, fail_all, is_full
from edge.outbox.reserve import DiskReserve

log = logging.getLogger(__name__)

Build = Callable[[list[Pending]], tuple[list[Row], list[Pending]]]
Commit = Callable[[list[Row], list[Pending]], Awaitable[None]]


class FullDisk:
    def __init__(
        self,
        reserve: DiskReserve,
        stats: OutboxStats,
        *,
        health: Callable[[], dict[str, Any]],
        on_health: Callable[[dict[str, Any]], object] | None,
    ) -> None:
        self.reserve = reserve
        self._stats = stats
        self._health = health
        self._on_health = on_health
        self.full = False  # refuse all but life-safety until the disk has room again
        self.degraded: str | None = None
        self._refusing = False  # a refusal was logged; the next is only counted
        # Protected messages that could not be committed (the disk and the reserve full):
        # kept here, unnumbered, and retried with every flush until the disk has room.
        self.held: list[Pending] = []
        self._held_logged = 0

    def set_degraded(self, why: str | None) -> None:
        if why == self.degraded:
            return
        self.degraded = why
        if why:
            log.error("outbox: degraded: %s", why)
        if self._on_health is not None:
            self._on_health(self._health())

    def ensure_reserve(self) -> None:
        self.set_degraded(self.reserve.ensure())

    def filled(self, exc: BaseException) -> None:
        """The disk was found full (once per episode: each change of health is itself a
        message to store)."""
        if not self.full:
            self.full = True
            self.set_degraded(f"disk full: {exc}")

    def take_held(self) -> list[Pending]:
        """The held messages, to go first in the next flush."""
        held, self.held = self.held, []
        return held

    def committed(self) -> None:
        """A commit went through: the next refusal is worth a log line again."""
        self._refusing = False
        if not self.held:
            self._held_logged = 0

    def keep_protected(self, items: list[Pending], why: str) -> list[Pending]:
        """Refuse what may be lost (counted; logged once until the next commit); the rest."""
        keep = []
        for it in items:
            if it.protected:
                keep.append(it)
                continue
            self._stats.refused += 1
            if not self._refusing:
                self._refusing = True
                log.warning("outbox: %s: refusing all but life-safety for now (counted in health)", why)
            fail(it, OutboxFull(f"{why}; {it.kind} from {it.src} refused"))
        return keep

    async def store(
        self,
        made: list[Pending],
        exc: BaseException,
        *,
        lift_cap: Callable[[], Awaitable[None]],
        build: Build,
        commit: Commit,
    ) -> None:
        """The disk (or the page cap) is full: keep only what must never be lost, giving up
        the reserve a step at a time until it fits; hold it in memory if even that is not
        enough (something else keeps filling the disk)."""
        self.filled(exc)
        keep = self.keep_protected(made, "disk full")
        if not keep:
            return
        try:
            await lift_cap()
        except sqlite3.Error as exc2:
            log.debug("outbox: cannot lift the page cap: %s", exc2)
        while self.reserve.release():
            # Renumbered: seqs of rows that were never committed leave no gap.
            rows, made2 = build(keep)
            if not rows:
                return
            try:
                await commit(rows, made2)
            except (sqlite3.Error, OSError) as exc2:
                if is_full(exc2):
                    keep = made2
                    continue
                log.critical("outbox: cannot commit %d life-safety messages: %s", len(rows), exc2)
                fail_all(made2, exc2)
                return
            return
        self.hold(keep)

    def hold(self, items: list[Pending]) -> None:
        """Keep protected messages the full disk refused, to retry with every flush.
        At most MAX_HELD: past it, the source holding the most gives up its newest, so
        one source flooding alarms can neither exhaust memory nor crowd out another's."""
        self.held[:0] = items  # they were first in the flush that failed; they stay first
        if len(self.held) > MAX_HELD:
            self._shed()
        self.set_degraded(HELD)
        if len(self.held) > self._held_logged:
            log.critical(
                "outbox: disk full and its reserve used up: %d protected messages (%s) held in "
                "memory, retried with every commit until there is room",
                len(self.held),
                ", ".join(sorted({it.kind for it in self.held})),
            )
        self._held_logged = len(self.held)

    def _shed(self) -> None:
        by_src: dict[str, list[int]] = {}
        for i, it in enumerate(self.held):
            by_src.setdefault(it.src, []).append(i)
        gone: set[int] = set()
        for _ in range(len(self.held) - MAX_HELD):
            biggest = max(by_src.values(), key=len)
            gone.add(biggest.pop())  # that source's newest
        kept = []
        for i, it in enumerate(self.held):
            if i in gone:
                self._stats.refused += 1
                fail(it, OutboxFull(f"disk full, {MAX_HELD} alarms held; {it.kind} from {it.src} refused"))
            else:
                kept.append(it)
        self.held = kept
        log.critical("outbox: %d held messages refused from the sources holding the most", len(gone))

    def lost_at_close(self) -> None:
        """The outbox closes with messages still held: they are lost, and said so."""
        if self.held:
            log.critical(
                "outbox: closing with %d protected messages never stored (disk full): lost", len(self.held)
            )
            fail_all(self.held, OutboxFull("disk full; closed before there was room"))
            self.held = []
