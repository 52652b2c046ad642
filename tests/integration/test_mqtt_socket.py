"""The MQTT connection's socket: small packets are not held back by Nagle's algorithm."""

from __future__ import annotations

import asyncio
import socket

from edge.mqtt import MqttConnection
from tests.support.broker import Mosquitto


def test_the_connection_sends_without_nagle(fast_broker: Mosquitto) -> None:
    async def go() -> int:
        async with MqttConnection(host="127.0.0.1", port=fast_broker.port, client_id="nodelay") as conn:
            await conn.publish("gridedge/v1/nodelay/up/sos.alarm", b"x")  # resolves on PUBACK
            sock = conn._sock
            assert isinstance(sock, socket.socket)
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    assert asyncio.run(go()) != 0
