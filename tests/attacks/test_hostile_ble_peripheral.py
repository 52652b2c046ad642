"""Threat: a hostile or broken wearable (over BLE or a cable): what it reports is data to
check, never a reason to do something unsafe."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from drivers.ble import uuids as u
from drivers.ble.driver import SESSION_QUEUE, WearableStats, _Session
from drivers.ble.kinds.sos_button import SosButton
from drivers.ble.sightings import MAX_UNKNOWN_REPORTS, Sightings
from edge.base.config import BleConfig, WearableConfig
from firmware_bridge.reasons import FwReason
from tests.integration.test_firmware_smp import flash, image
from tests.support.smp_device import SmpDevice


@pytest.mark.parametrize("reported", ["1.6.0-rc1", "v1.6", "garbage"])
def test_a_version_that_does_not_parse_is_no_way_around_the_downgrade_check(
    reported: str, tmp_path: Path
) -> None:
    dev = SmpDevice(tmp_path / "ttySMP", running=reported)
    try:
        res, offsets = flash(dev, image("1.5.0"), "1.5.0")
    finally:
        dev.stop()
    assert not res.ok and res.reason == FwReason.ROLLBACK, res
    assert offsets == [] and dev.slots[0].version == reported  # nothing was uploaded


def test_strangers_on_rotating_addresses_cannot_flood_device_unknown() -> None:
    """One radio advertising a gridedge service from a new address each time: each is new
    to the per-address limit, so only the overall one holds."""
    reports: list[dict[str, Any]] = []
    sightings = Sightings(
        BleConfig(unknown_report_s=60.0), dict, {u.SOS_SERVICE: "sos"}, lambda _k, _s, d: reports.append(d)
    )
    adv = AdvertisementData(None, {}, {}, [u.SOS_SERVICE], None, -60, ())
    for i in range(5000):
        address = f"7A:00:00:{i // 65536:02X}:{i // 256 % 256:02X}:{i % 256:02X}"
        sightings.on_advert(BLEDevice(address, None, None), adv)
    assert 0 < len(reports) <= MAX_UNKNOWN_REPORTS + 1
    assert sightings.unknown_adverts == 5000 and sightings.unknown_suppressed >= 5000 - len(reports) - 1


def test_a_notification_flood_is_bounded_and_counted() -> None:
    """A peripheral notifying far faster than its events are handled."""

    class Client:
        callback: Any = None

        async def start_notify(self, _char: str, callback: Any) -> None:
            self.callback = callback

    async def go() -> _Session:
        client = Client()
        stats = WearableStats()
        w = WearableConfig(id="btn", kind="sos_button", worker="w", address="F0:00:00:00:00:01")
        sess = _Session(w, SosButton(), client, asyncio.Event(), 1.0, stats)  # type: ignore[arg-type]
        await sess.subscribe(u.SOS_EVENT, "sos")
        for _ in range(10_000):
            client.callback(None, bytearray(8))
        return sess

    sess = asyncio.run(go())
    assert sess.queue.qsize() == SESSION_QUEUE and sess.stats.flooded == 10_000 - SESSION_QUEUE
