"""A broker down for long: one warning, not one per retry; the reconnect says how many;
a session lost under the gateway is named plainly."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from pathlib import Path

import pytest

from edge.outbox import Outbox, OutboxHooks
from edge.publisher import Publisher
from floor.config import MqttConfig
from tests.support.broker import Mosquitto
from tests.support.pieces import ingest_for


def test_an_outage_logs_one_warning_then_the_reconnect(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.publisher")
    broker.kill(signal.SIGTERM)  # down before the gateway starts

    async def go() -> tuple[int, int]:
        hooks = OutboxHooks(committed=lambda rows: pub.on_commit(rows))  # noqa: PLW0108 (made below)
        async with Outbox(tmp_path / "o.sqlite", hooks=hooks) as ob:
            ingest = ingest_for(ob, "g")
            cfg = MqttConfig(port=broker.port, reconnect_min_s=0.02, reconnect_max_s=0.05)
            pub = Publisher(mqtt=cfg, gw="g", outbox=ob, ingest=ingest)
            task = asyncio.create_task(pub.run())
            await asyncio.sleep(1.0)  # some 20 attempts against a closed port
            failures = pub.failed_attempts
            await asyncio.to_thread(broker.start)
            await asyncio.wait_for(pub.up.wait(), 10)
            first_outage = len(caplog.records)
            await asyncio.to_thread(broker.kill)  # and a session lost under it says so plainly
            await asyncio.sleep(1.0)  # the socket closes at once; a second is plenty
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return failures, first_outage

    failures, first_outage = asyncio.run(go())
    assert failures >= 3
    refused = [r for r in caplog.records[:first_outage] if "cannot reach" in r.getMessage()]
    assert [r.levelno for r in refused].count(logging.WARNING) == 1, [r.levelname for r in refused]
    assert len(refused) >= failures
    back = re.search(r"connected to \S+ after (\d+) failures", caplog.text)
    assert back and int(back[1]) >= failures
    assert "connection lost: closed by the broker or the network" in caplog.text
