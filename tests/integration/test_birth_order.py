"""A platform may send a command the moment it sees a gateway's birth, and an operator the
moment the status says the link is up: the gateway is subscribed by then, even in its very
first session (when the broker keeps no subscription for it)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.outbox import Outbox, OutboxHooks
from edge.publisher import Publisher
from floor.config import MqttConfig
from floor.messages import Incoming
from tests.support.broker import Mosquitto
from tests.support.pieces import ingest_for

TRIES = 8  # the race was lost about one time in four


def test_a_command_sent_on_the_birth_is_received(broker: Mosquitto, tmp_path: Path) -> None:
    platform = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="platform")

    def on_birth(c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        c.publish(m.topic.replace("/status", "/cmd"), b"birth", qos=1)

    platform.on_message = on_birth
    platform.connect("127.0.0.1", broker.port)
    subscribed = threading.Event()
    platform.on_subscribe = lambda *_a: subscribed.set()
    platform.subscribe("gridedge/v1/+/status", qos=1)
    platform.loop_start()
    assert subscribed.wait(5)

    async def one(i: int) -> set[bytes]:
        got: set[bytes] = set()
        both = asyncio.Event()
        gw = f"first-session-{i}"
        hooks = OutboxHooks(committed=lambda rows: pub.on_commit(rows))  # noqa: PLW0108 (made below)
        async with Outbox(tmp_path / f"o{i}.sqlite", hooks=hooks) as ob:
            ingest = ingest_for(ob, gw)
            loop = asyncio.get_running_loop()

            def on_message(m: Incoming) -> None:
                got.add(m.payload)
                if len(got) == 2:
                    loop.call_soon_threadsafe(both.set)

            pub = Publisher(
                mqtt=MqttConfig(port=broker.port),
                gw=gw,
                outbox=ob,
                ingest=ingest,
                subscriptions=(f"gridedge/v1/{gw}/cmd",),
                on_message=on_message,
            )
            task = asyncio.create_task(pub.run())
            try:
                await asyncio.wait_for(pub.up.wait(), 5)
                platform.publish(f"gridedge/v1/{gw}/cmd", b"up", qos=1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(both.wait(), 3)
                return got
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    try:
        received = [asyncio.run(one(i)) for i in range(TRIES)]
    finally:
        platform.loop_stop()
        platform.disconnect()
    assert all(got == {b"birth", b"up"} for got in received), f"commands received: {received}"
