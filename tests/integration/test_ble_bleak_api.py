"""bleak's real API (BleakScanner, BleakClient) against simulated wearables with real GATT.

The wearables are bumble devices on a virtual radio; bleak reaches them through the
bumble backend over HCI on TCP, the same path the gateway process takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from drivers.ble import profiles as p
from drivers.ble import uuids as u
from drivers.ble.sim.backend import factory
from drivers.ble.sim.peripherals import SimAir, SimBodyCamera, SimSosButton
from drivers.ble.transport import BleBackend


def run(body: Callable[[SimAir, BleBackend], Awaitable[None]], wearables: list[Any]) -> None:
    async def main() -> None:
        air = SimAir()
        port = await air.serve_hci()
        for w in wearables:
            await air.add(w)
        backend = await factory({"hci": f"tcp-client:127.0.0.1:{port}"})
        try:
            async with asyncio.timeout(60):
                await body(air, backend)
        finally:
            await backend.aclose()
            await air.close()

    asyncio.run(main())


async def scan(backend: BleBackend, want: int, services: list[str] | None = None) -> dict[str, Any]:
    seen: dict[str, tuple[BLEDevice, AdvertisementData]] = {}
    done = asyncio.Event()

    def on_advert(d: BLEDevice, a: AdvertisementData) -> None:
        if services and not set(services) & set(a.service_uuids):
            return
        seen[d.address] = (d, a)
        if len(seen) >= want:
            done.set()

    scanner = backend.make_scanner(on_advert)
    assert isinstance(scanner, BleakScanner)
    await scanner.start()
    await asyncio.wait_for(done.wait(), 10)
    await scanner.stop()
    return seen


def test_scan_connect_discover_read_notify_write() -> None:
    btn = SimSosButton("btn-1", "F0:00:00:00:00:01", battery=64)

    async def body(_air: SimAir, backend: BleBackend) -> None:
        seen = await scan(backend, 1)
        device, adv = seen["F0:00:00:00:00:01"]
        assert adv.local_name == "btn-1" and u.SOS_SERVICE in adv.service_uuids and adv.rssi < 0
        lost = asyncio.Event()
        client = backend.make_client(device, lambda _c: lost.set(), 5.0)
        assert isinstance(client, BleakClient)
        await client.connect()
        services = {s.uuid for s in client.services}
        assert {u.BATTERY_SERVICE, u.DEVICE_INFORMATION, u.SOS_SERVICE} <= services
        event_char = client.services.get_characteristic(u.SOS_EVENT)
        assert event_char is not None and {"read", "notify"} <= set(event_char.properties)
        assert await client.read_gatt_char(u.BATTERY_LEVEL) == bytearray([64])
        assert (await client.read_gatt_char(u.FIRMWARE_REVISION)).decode() == "1.4.2"
        got: asyncio.Queue[bytes] = asyncio.Queue()
        await client.start_notify(u.SOS_EVENT, lambda _c, v: got.put_nowait(bytes(v)))
        await client.start_notify(u.BATTERY_LEVEL, lambda _c, v: got.put_nowait(bytes(v)))
        counter, answered = btn.press(p.SosEventType.LONG_PRESS)
        event = p.parse_sos_event(await asyncio.wait_for(got.get(), 5))
        assert isinstance(event, p.SosEvent) and event.counter == counter
        # unanswered, the button resends the very same event
        again = p.parse_sos_event(await asyncio.wait_for(got.get(), 5))
        assert again == event
        await client.write_gatt_char(u.SOS_FEEDBACK, p.encode_feedback(p.Feedback.RECEIVED, counter), True)
        await asyncio.wait_for(answered, 5)
        assert btn.feedback[-1].pattern == p.Feedback.RECEIVED and btn.feedback[-1].counter == counter
        await btn.set_battery(12)
        while (v := await asyncio.wait_for(got.get(), 5)) != bytes([12]):
            assert len(v) == 8  # a late resend of the event, nothing else
        # the peripheral ends the link: bleak's disconnected callback fires; we reconnect
        await btn.drop_link()
        await asyncio.wait_for(lost.wait(), 5)
        assert not client.is_connected
        seen = await scan(backend, 1)
        client2 = backend.make_client(seen["F0:00:00:00:00:01"][0], lambda _c: None, 5.0)
        await client2.connect()
        assert await client2.read_gatt_char(u.BATTERY_LEVEL) == bytearray([12])
        await client2.disconnect()

    run(body, [btn])


def test_camera_profile_and_a_device_that_stops_answering() -> None:
    cam = SimBodyCamera("cam-1", "F1:00:00:00:00:01")

    async def body(_air: SimAir, backend: BleBackend) -> None:
        seen = await scan(backend, 1)
        client = backend.make_client(seen["F1:00:00:00:00:01"][0], lambda _c: None, 5.0)
        await client.connect()
        marks: asyncio.Queue[bytes] = asyncio.Queue()
        await client.start_notify(u.CAMERA_MARK, lambda _c, v: marks.put_nowait(bytes(v)))
        status = p.parse_camera_state(bytes(await client.read_gatt_char(u.CAMERA_STATE)))
        assert isinstance(status, p.CameraStatus) and status.state == p.CameraState.IDLE
        control = p.encode_camera_control(p.CameraCommand.START, p.CameraReason.SOS)
        await client.write_gatt_char(u.CAMERA_CONTROL, control, response=True)
        status = p.parse_camera_state(bytes(await client.read_gatt_char(u.CAMERA_STATE)))
        assert isinstance(status, p.CameraStatus) and status.state == p.CameraState.RECORDING
        digest = await cam.mark()
        mark = p.parse_clip_mark(await asyncio.wait_for(marks.get(), 5))  # 44 bytes: needs the larger MTU
        assert isinstance(mark, p.ClipMark) and mark.sha256 == digest and mark.clip_id == 1
        cam.set_muted(True)  # it stops answering: a read never completes
        try:
            async with asyncio.timeout(1.0):
                await client.read_gatt_char(u.BATTERY_LEVEL)
            raise AssertionError("a muted device answered")
        except TimeoutError:
            pass
        cam.set_muted(False)
        assert await client.read_gatt_char(u.BATTERY_LEVEL) == bytearray([cam.battery])
        await client.disconnect()

    run(body, [cam])


def test_ten_devices_at_once() -> None:
    buttons = [SimSosButton(f"btn-{i}", f"F0:00:00:00:01:{i:02X}") for i in range(10)]

    async def body(_air: SimAir, backend: BleBackend) -> None:
        seen = await scan(backend, 10, [u.SOS_SERVICE])
        queues: dict[str, asyncio.Queue[bytes]] = {}
        clients = []
        for addr, (device, _adv) in sorted(seen.items()):
            c = backend.make_client(device, lambda _c: None, 5.0)
            clients.append(c)
            q: asyncio.Queue[bytes] = asyncio.Queue()
            queues[addr] = q
            await c.connect()
            await c.start_notify(u.SOS_EVENT, lambda _c, v, q=q: q.put_nowait(bytes(v)))  # type: ignore[misc]
        assert all(b.connected for b in buttons)
        presses = [(b, b.press(p.SosEventType.LONG_PRESS)) for b in buttons]
        for b, (counter, _fut) in presses:
            ev = p.parse_sos_event(await asyncio.wait_for(queues[b.address].get(), 5))
            assert isinstance(ev, p.SosEvent) and ev.counter == counter
        await asyncio.gather(
            *(
                c.write_gatt_char(u.SOS_FEEDBACK, p.encode_feedback(p.Feedback.RECEIVED, 1), True)
                for c in clients
            )
        )
        await asyncio.wait_for(asyncio.gather(*(fut for _b, (_c, fut) in presses)), 5)
        for c in clients:
            await c.disconnect()

    run(body, buttons)


def test_connecting_to_a_device_that_is_not_there_fails_cleanly() -> None:
    async def body(_air: SimAir, backend: BleBackend) -> None:
        client = backend.make_client(BLEDevice("F9:00:00:00:00:09", None, None), lambda _c: None, 0.5)
        try:
            await client.connect()
            raise AssertionError("connected to nothing")
        except BleakError as exc:
            assert "F9:00:00:00:00:09" in str(exc)

    run(body, [])
