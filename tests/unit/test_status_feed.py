"""The status page's live feed: one status document per tick for all viewers, a fresh one
for each new viewer at once, and nothing built while nobody is looking."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge.web import server
from edge.web.server import Feed


def test_viewers_share_one_document_per_tick_and_nobody_looking_costs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "EVENT_EVERY_S", 0.02)
    built = 0
    state = {"alarms": 0}

    async def snapshot() -> dict[str, Any]:
        nonlocal built
        built += 1
        return dict(state)

    async def scenario() -> None:
        feed = Feed(snapshot)
        await asyncio.sleep(0.1)
        assert built == 0  # nobody looking: nothing built
        seen = [feed.join() for _ in range(5)]
        assert await feed.next(seen[0], 1.0) and feed.text == '{"alarms": 0}'
        first = feed.version
        state["alarms"] = 1  # an SOS: every viewer sees the new document
        for i in range(5):
            assert await feed.next(first, 1.0), i
        assert feed.text == '{"alarms": 1}'
        await asyncio.sleep(0.2)  # about ten ticks with five viewers
        assert 2 <= built <= 20, built  # one document per tick, not one per viewer
        late = feed.join()  # a viewer arriving now gets the current document at once
        assert await feed.next(late, 0.01) and feed.text == '{"alarms": 1}'
        assert not await feed.next(feed.version, 0.1)  # nothing new: a heartbeat's timeout
        for _ in range(6):
            feed.leave()
        await asyncio.sleep(0.05)
        after = built
        await asyncio.sleep(0.2)
        assert built == after  # everyone left: the feed stopped
        state["alarms"] = 2
        again = feed.join()  # back: a fresh document, not the one from before
        assert await feed.next(again, 1.0) and feed.text == '{"alarms": 2}'
        feed.leave()

    asyncio.run(scenario())
