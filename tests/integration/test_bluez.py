"""The production BLE path: bleak's BlueZ backend, against BlueZoo (user-space org.bluez).

No Bluetooth hardware and no kernel Bluetooth here: BlueZoo plays BlueZ on a private
system bus; the SOS button is a BlueZ peripheral application on a second adapter.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends import BleakBackend

from drivers.ble import profiles as p
from drivers.ble import uuids as u
from drivers.ble.transport import resolve_factory
from tests.support.bluezoo import BluezButton, BlueZoo
from tests.support.broker import Mosquitto
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc

KEY = "5ec0ffee5ec0ffee5ec0ffee5ec0ffee"  # the button's event key, enrolled in the gateway


def test_bleak_bluez_backend_scan_connect_read_notify_write(
    zoo: BlueZoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    button = BluezButton(zoo, "hci1", key=KEY)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", zoo.address)
    target = zoo.adapter_address(1)

    async def main() -> None:
        backend = await resolve_factory("bleak", {"adapter": "hci0"})({"adapter": "hci0"})
        assert backend.scanner is None and backend.client is None  # bleak's own platform backend
        found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_advert(d: Any, a: Any) -> None:
            if d.address == target and not found.done():
                found.set_result((d, a))

        scanner = backend.make_scanner(on_advert)
        assert isinstance(scanner, BleakScanner)
        await scanner.start()
        device, adv = await asyncio.wait_for(found, 20)
        await scanner.stop()
        assert u.SOS_SERVICE in adv.service_uuids
        client = backend.make_client(device, lambda _c: None, 10.0)
        assert isinstance(client, BleakClient) and client.backend_id == BleakBackend.BLUEZ_DBUS
        await client.connect()
        try:
            assert await client.read_gatt_char(u.BATTERY_LEVEL) == bytearray([77])
            events: asyncio.Queue[bytes] = asyncio.Queue()
            await client.start_notify(u.SOS_EVENT, lambda _c, v: events.put_nowait(bytes(v)))
            counter = await asyncio.to_thread(button.press)
            ev = p.parse_sos_event(await asyncio.wait_for(events.get(), 10), bytes.fromhex(KEY))
            assert isinstance(ev, p.SosEvent) and ev.counter == counter
            await client.write_gatt_char(
                u.SOS_FEEDBACK, p.encode_feedback(p.Feedback.RECEIVED, counter), True
            )
            assert await asyncio.to_thread(button.wait_feedback, counter) == "received"
        finally:
            await client.disconnect()

    try:
        asyncio.run(main())
    finally:
        button.stop()


@pytest.mark.slow
def test_gateway_on_bluez_sos_end_to_end(zoo: BlueZoo, broker: Mosquitto, tmp_path: Path) -> None:
    """The gateway process with its default backend ("bleak"), as on a Pi."""
    button = BluezButton(zoo, "hci1", key=KEY)
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        devices=(
            '[[devices]]\nid = "sos-bz"\nkind = "sos_button"\nworker = "w-9"\n'
            f'address = "{zoo.adapter_address(1)}"\nkey = "{KEY}"\n'
        ),
        extra='[ble]\nprobe_s = 2.0\n[ble.options]\nadapter = "hci0"\n',
        env={"DBUS_SYSTEM_BUS_ADDRESS": zoo.address},
    )
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    try:
        gw.wait_status(
            lambda d: (d["ble"] or {}).get("wearables", {}).get("sos-bz", {}).get("state") == "connected", 40
        )
        counter = button.press()
        assert button.wait_feedback(counter) == "received"
        col.wait_for(lambda ms: any(m.topic.endswith("/sos.alarm") for m in ms), timeout=15)
        doc = gw.status()
    finally:
        gw.stop()
        col.stop()
        button.stop()
    (alarm,) = col.up("sos.alarm")
    assert alarm.payload["prio"] == 0
    assert (
        alarm.payload["recs"][0]["d"]["counter"] == counter
        and alarm.payload["recs"][0]["d"]["worker"] == "w-9"
    )
    assert doc["ble"]["backend"] == "bleak"
