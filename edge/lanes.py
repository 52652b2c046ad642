"""The publisher's send lanes: what to send next, by strict priority, from the rows the
outbox hands over live and from SQLite where a lane has older rows waiting there.

A lane is *clean* while everything of it not yet sent is in its send buffer: a row handed
over then goes straight into the buffer (no read back from SQLite). Otherwise (the buffer
is full, a read is in progress, or a reconnect left anything unacknowledged) the lane is
*dirty* and the next row comes from a read after the lane's cursor, in order. A row that
is not written yet (write-behind) and cannot go into its buffer is handed back to be
written, and its lane is *blocked* (not read) until it is: the read after it must find it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

from edge.outbox import Row
from floor.kinds import Prio

PAGE = 64  # rows read from SQLite at a time: small reads keep the loop free for an alarm
Lane = tuple[int, bool]  # (prio, True for the pre-session telemetry backlog)
# Strict order: life-safety, events, live telemetry, backlog telemetry, bulk.
LANES: tuple[Lane, ...] = (
    (Prio.LIFE_SAFETY, False),
    (Prio.EVENT, False),
    (Prio.TELEMETRY, False),
    (Prio.TELEMETRY, True),
    (Prio.BULK, False),
)
BACKLOG: Lane = (Prio.TELEMETRY, True)  # paced by `BacklogWindow`: it must not delay live traffic
Fetch = Callable[..., Awaitable[list[Row]]]  # Outbox.fetch(prio, after, limit, upto=)


class SendLanes:
    """One session's send buffers and cursors (None between sessions: nothing is taken)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self.dirty: set[Lane] = set()
        self._fetching: set[Lane] = set()  # lanes whose SQLite read is in progress
        self._blocked: set[Lane] = set()  # lanes with a row handed back to be written first
        self.buffers: dict[Lane, deque[Row]] | None = None
        self._cursor: dict[Lane, int] = {}
        self._boundary = 0  # highest seq given before this session: the backlog

    def open(self, boundary: int) -> None:
        """A new session: everything unacknowledged is read again (the live lane from past
        `boundary`, what is below it as the backlog)."""
        self._boundary = boundary
        self.buffers = {lane: deque() for lane in LANES}
        self._cursor = {lane: 0 for lane in LANES}
        self._cursor[(Prio.TELEMETRY, False)] = boundary
        self.dirty = set(LANES)
        self._blocked.clear()

    def close(self) -> None:
        self.buffers = None

    def take(self, rows: list[Row], unsaved: frozenset[int]) -> list[Row]:
        """Rows handed over, oldest first; those of `unsaved` it could not take."""
        buffers = self.buffers
        refused: list[Row] = []
        for row in rows:
            lane: Lane = (row.prio, False)
            buf = buffers.get(lane) if buffers is not None else None
            # A lane being read right now is treated as dirty: its read may or may not
            # include this row, so the row must come from the next read, in order.
            clean = lane not in self.dirty and lane not in self._fetching and lane not in self._blocked
            if buf is not None and clean and len(buf) < 2 * PAGE:
                buf.append(row)
                self._cursor[lane] = row.seq
            elif row.seq in unsaved:
                refused.append(row)  # it must be written before its lane is read
                self._blocked.add(lane)
            else:
                self.dirty.add(lane)
        return refused

    def saved(self, rows: list[Row]) -> None:
        """Rows handed back are written now: their lanes may be read."""
        for row in rows:
            lane: Lane = (row.prio, False)
            self._blocked.discard(lane)
            self.dirty.add(lane)

    def put_back(self, lane: Lane, row: Row) -> None:
        """A row that may not go yet (the in-flight window is full): first next time."""
        if self.buffers is not None:
            self.buffers[lane].appendleft(row)

    async def next_row(self) -> tuple[Lane, Row | None]:
        """The next row by strict priority. After any read from SQLite the scan starts
        again from the top, so a row committed meanwhile in a more urgent lane wins."""
        while (buffers := self.buffers) is not None:
            for lane in LANES:
                buf = buffers[lane]
                if buf:
                    return lane, buf.popleft()
                if lane in self.dirty and lane not in self._blocked:
                    self.dirty.discard(lane)
                    prio, old = lane
                    self._fetching.add(lane)
                    try:
                        upto = self._boundary if old else None
                        rows = await self._fetch(prio, self._cursor[lane], PAGE, upto=upto)
                    finally:
                        self._fetching.discard(lane)
                    if rows:
                        buf.extend(rows)
                        self._cursor[lane] = rows[-1].seq
                        if len(rows) == PAGE:
                            self.dirty.add(lane)
                    break  # rescan from the most urgent lane
            else:
                return LANES[0], None
        return LANES[0], None
