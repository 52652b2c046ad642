"""SMP over BLE through the wearables' own connection (the bleak seam).

A wearable is already connected by drivers/ble/driver.py; a second connection would
compete with it (most wearables take one central). So the flasher borrows that
`BleakClient`: it subscribes to the SMP characteristic, writes requests without
response in MTU-sized pieces and reassembles the notified responses. When the device
resets into its new image, the link drops; the wearables driver reconnects it and
`connect` waits for that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from bleak import BleakClient
from bleak.exc import BleakError
from smp import header as smphdr
from smpclient.transport import SMPTransport, SMPTransportDisconnected

from drivers.ble import uuids as u

ClientFor = Callable[[str, float], Awaitable[BleakClient]]
WRITE_TIMEOUT_S = 10.0  # one request's writes; SMP answers are timed by the flasher


class SessionSMPTransport(SMPTransport):
    """`address` is the wearable id; `client_for(id, timeout)` yields its live connection."""

    def __init__(self, client_for: ClientFor) -> None:
        self._client_for = client_for
        self._client: BleakClient | None = None
        self._buffer = bytearray()
        self._arrived = asyncio.Event()
        self._mtu = 20
        self._max_size = 512

    async def connect(self, address: str, timeout_s: float) -> None:
        client = await self._client_for(address, timeout_s)
        if client.services.get_characteristic(u.SMP_CHARACTERISTIC) is None:
            raise SMPTransportDisconnected(f"{address} has no SMP service")
        self._client = client
        self._buffer.clear()
        self._mtu = max(20, int(client.mtu_size) - 3)
        try:
            async with asyncio.timeout(timeout_s):  # a link that dropped under us may never answer
                await client.start_notify(u.SMP_CHARACTERISTIC, self._on_notify)
        except TimeoutError as exc:
            raise SMPTransportDisconnected(f"{address}: no answer to the SMP subscription") from exc

    def _on_notify(self, _char: Any, data: bytearray) -> None:
        self._buffer += data
        self._arrived.set()

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            with contextlib.suppress(BleakError, OSError, EOFError, ValueError):
                await client.stop_notify(u.SMP_CHARACTERISTIC)

    def _live(self) -> BleakClient:
        if self._client is None or not self._client.is_connected:
            raise SMPTransportDisconnected("the wearable's BLE link is down")
        return self._client

    async def send(self, data: bytes) -> None:
        client = self._live()
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):  # a write into a dropped link can hang
                for i in range(0, len(data), self._mtu):
                    piece = data[i : i + self._mtu]
                    await client.write_gatt_char(u.SMP_CHARACTERISTIC, piece, response=False)
        except TimeoutError as exc:
            raise SMPTransportDisconnected("the wearable took no more SMP data") from exc
        except (BleakError, OSError, EOFError) as exc:
            raise SMPTransportDisconnected(str(exc)) from exc

    async def receive(self) -> bytes:
        while True:
            if len(self._buffer) >= smphdr.Header.SIZE:
                size = smphdr.Header.SIZE + int.from_bytes(self._buffer[2:4], "big")
                if len(self._buffer) >= size:
                    frame = bytes(self._buffer[:size])
                    del self._buffer[:size]
                    return frame
            self._live()
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):  # wake up now and then to notice a dropped link
                    await self._arrived.wait()

    async def send_and_receive(self, data: bytes) -> bytes:
        await self.send(data)
        return await self.receive()

    def initialize(self, smp_server_transport_buffer_size: int) -> None:
        self._max_size = smp_server_transport_buffer_size

    @property
    def mtu(self) -> int:
        return self._max_size

    @property
    def max_unencoded_size(self) -> int:
        return self._max_size
