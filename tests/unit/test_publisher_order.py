"""The publisher's send order within a lane (edge/lanes.py), with a row committed while the
lane is being read, and a row handed back to be written first."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.lanes import SendLanes
from edge.outbox import Outbox, OutboxHooks, Pending, Row
from floor.kinds import Prio


def test_row_committed_during_a_read_is_sent_once_and_in_order(tmp_path: Path) -> None:
    async def go() -> list[int]:
        def committed(rows: list[Row]) -> None:
            lanes.take(rows, frozenset())

        hooks = OutboxHooks(committed=committed)
        async with Outbox(tmp_path / "o.sqlite", hooks=hooks) as ob:
            injected = False

            async def slow_fetch(*args: object, **kw: object) -> list[Row]:
                nonlocal injected
                rows = await ob.fetch(*args, **kw)  # type: ignore[arg-type]
                if not injected and args[0] == Prio.EVENT:  # a commit lands while the events lane is read
                    injected = True
                    late = ob.submit(Pending(Prio.EVENT, "device.state", "d", 0, lambda s: b"b"))
                    await ob.flush()
                    await late
                return rows

            lanes = SendLanes(slow_fetch)
            first = ob.submit(Pending(Prio.EVENT, "device.state", "d", 0, lambda s: b"a"))
            await ob.flush()
            await first
            lanes.open(0)  # a session starts: every lane is read
            sent: list[int] = []
            while True:
                _lane, row = await lanes.next_row()
                if row is None:
                    break
                sent.append(row.seq)
            return sent

    sent = asyncio.run(go())
    assert sent == sorted(set(sent)), f"sent out of order or twice: {sent}"
    assert sent[:2] == [1, 2]


def test_a_row_handed_back_holds_its_lane_until_it_is_written(tmp_path: Path) -> None:
    """A message not yet written that cannot go into its buffer is handed back; a read of its
    lane before it is written would skip it, so the lane is not read until it is."""
    on_disk: list[Row] = []
    reads: list[int] = []

    async def fetch(prio: int, after: int, limit: int, *, upto: int | None = None) -> list[Row]:
        reads.append(prio)
        return [r for r in on_disk if r.prio == prio and r.seq > after][:limit]

    async def go() -> list[int]:
        lanes = SendLanes(fetch)
        lanes.open(0)
        assert await lanes.next_row() == ((Prio.LIFE_SAFETY, False), None)  # every lane read once
        reads.clear()
        lane = (int(Prio.TELEMETRY), False)
        on_disk.append(Row(1, lane[0], "gnss.fix", b"x"))
        lanes.dirty.add(lane)  # seq 1 was written and its lane must be read from SQLite
        unsaved = Row(2, lane[0], "gnss.fix", b"y")
        assert lanes.take([unsaved], frozenset({2})) == [unsaved]  # handed back: not written yet
        assert await lanes.next_row() == ((Prio.LIFE_SAFETY, False), None)
        assert lane[0] not in reads  # held: a read now would find 1, and 2 would never come
        on_disk.append(unsaved)  # written
        lanes.saved([unsaved])
        sent = []
        while (got := await lanes.next_row())[1] is not None:
            sent.append(got[1].seq)
        return sent

    assert asyncio.run(go()) == [1, 2]
