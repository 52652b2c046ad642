"""The publisher's send order within a lane, with a row committed while the lane is being read."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from edge.outbox import Outbox, OutboxHooks, Pending, Row
from edge.publisher import LANES, Publisher
from floor.config import MqttConfig
from floor.kinds import Prio
from tests.support.pieces import ingest_for


def test_row_committed_during_a_read_is_sent_once_and_in_order(tmp_path: Path) -> None:
    async def go() -> list[int]:
        hooks = OutboxHooks(committed=lambda rows: pub.on_commit(rows))  # noqa: PLW0108 (made below)
        async with Outbox(tmp_path / "o.sqlite", hooks=hooks) as ob:
            ingest = ingest_for(ob, "g")
            pub = Publisher(mqtt=MqttConfig(), gw="g", outbox=ob, ingest=ingest)
            first = ob.submit(Pending(Prio.EVENT, "device.state", "d", 0, lambda s: b"a"))
            await ob.flush()
            await first
            buffers: dict[tuple[int, bool], deque[Row]] = {lane: deque() for lane in LANES}
            cursor = {lane: 0 for lane in LANES}
            pub._dirty = set(LANES)
            pub._buffers, pub._cursor = buffers, cursor
            real_fetch = ob.fetch
            injected = False

            async def slow_fetch(*args: object, **kw: object) -> list[Row]:
                nonlocal injected
                rows = await real_fetch(*args, **kw)  # type: ignore[arg-type]
                if not injected and args[0] == Prio.EVENT:  # a commit lands while the events lane is read
                    injected = True
                    late = ob.submit(Pending(Prio.EVENT, "device.state", "d", 0, lambda s: b"b"))
                    await ob.flush()
                    await late
                return rows

            ob.fetch = slow_fetch  # type: ignore[method-assign]
            sent: list[int] = []
            while True:
                _lane, row = await pub._next_row(buffers, cursor)
                if row is None:
                    break
                sent.append(row.seq)
            return sent

    sent = asyncio.run(go())
    assert sent == sorted(set(sent)), f"sent out of order or twice: {sent}"
    assert sent[:2] == [1, 2]
