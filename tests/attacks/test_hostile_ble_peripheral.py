"""Threat: a hostile or broken wearable (over BLE or a cable): what it reports is data to
check, never a reason to do something unsafe."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from drivers.ble import profiles as p
from drivers.ble import uuids as u
from drivers.ble.kinds.sos_button import SosButton
from drivers.ble.session import SESSION_QUEUE, Session, WearableStats
from drivers.ble.sightings import MAX_UNKNOWN_REPORTS, Sightings
from drivers.nmea0183 import Reason
from firmware_bridge.reasons import FwReason
from floor.config import BleConfig, WearableConfig
from tests.integration.test_firmware_smp import flash, image
from tests.integration.test_wearables import Rig, recs, wait_rec
from tests.support.broker import Mosquitto
from tests.support.smp_device import SmpDevice
from tests.support.wearables import button


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

    async def go() -> Session:
        client = Client()
        stats = WearableStats()
        w = WearableConfig(id="btn", kind="sos_button", worker="w", address="F0:00:00:00:00:01")
        sess = Session(w, SosButton(), client, asyncio.Event(), 1.0, stats)  # type: ignore[arg-type]
        await sess.subscribe(u.SOS_EVENT, "sos")
        for _ in range(10_000):
            client.callback(None, bytearray(8))
        return sess

    sess = asyncio.run(go())
    assert sess.queue.qsize() == SESSION_QUEUE and sess.stats.flooded == 10_000 - SESSION_QUEUE


def test_an_authentic_event_replayed_from_an_earlier_boot_or_with_its_uptime_wound_back_is_not_new() -> None:
    """The old rule took any event whose uptime went back as a reboot. An authenticated
    event carries the device's boot count: only a later boot restarts the counter, and
    within a boot the last 64 counters are remembered as committed or not (a resend of a
    press whose notification was lost is still new; a replay of a committed one is not)."""
    key = bytes(range(16))
    g = p.SosCounterGuard()

    def ev(counter: int, uptime: int, boot: int) -> p.SosEvent:
        parsed = p.parse_sos_event(
            p.encode_sos_event(p.SosEvent(p.SosEventType.LONG_PRESS, counter, uptime, boot), key), key
        )
        assert isinstance(parsed, p.SosEvent)
        return parsed

    assert g.fresh("b", ev(39, 80_000, boot=7))
    assert g.fresh("b", ev(40, 90_000, boot=7))
    assert not g.fresh("b", ev(39, 80_000, boot=7))  # committed already: a replay, answered again
    assert g.same("b", ev(39, 80_000, boot=7))
    assert g.fresh("b", ev(38, 70_000, boot=7))  # never committed (its notification was lost)
    assert not g.fresh("b", ev(38, 70_000, boot=7))
    assert not g.fresh("b", ev(40 - 65, 10, boot=7))  # beyond the window: stale
    assert not g.fresh("b", ev(900, 50, boot=6))  # an earlier boot's event: a replay
    assert g.same("b", ev(40, 90_000, boot=7))  # a resend: answered again, no second alarm
    assert g.fresh("b", ev(1, 50, boot=8))  # a real reboot: its counter starts again


def test_an_event_under_the_wrong_key_or_downgraded_is_forged_and_a_malformed_one_only_rejected() -> None:
    key, other = bytes(range(16)), bytes(16)
    good = p.encode_sos_event(p.SosEvent(p.SosEventType.LONG_PRESS, 5, 1000, 1), key)
    assert isinstance(p.parse_sos_event(good, key), p.SosEvent)
    wrong = p.parse_sos_event(
        p.encode_sos_event(p.SosEvent(p.SosEventType.LONG_PRESS, 5, 1000, 1), other), key
    )
    flipped = p.parse_sos_event(good[:3] + bytes([good[3] ^ 1]) + good[4:], key)  # counter changed in flight
    v1 = p.parse_sos_event(p.encode_sos_event(p.SosEvent(p.SosEventType.TRIPLE_PRESS, 6, 1000)), key)
    short = p.parse_sos_event(good[:7], key)
    assert [getattr(r, "reason", None) for r in (wrong, flipped, v1, short)] == [
        Reason.FORGED,
        Reason.FORGED,
        Reason.FORGED,
        Reason.MALFORMED,
    ]


def test_a_peripheral_with_a_paired_buttons_address_but_not_its_key_can_neither_raise_nor_cancel(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """It advertises btn-1's address and the SOS service, and its presses are well formed:
    only the key is wrong. The gateway reports it (`device.state` rejected, reason
    security), drops it, and believes nothing it sends; the genuine button still works."""
    clone = {**button("btn-1", 1, "w-7"), "sim_key": "00" * 16}  # what the gateway enrolled differs
    rig = Rig(broker, tmp_path, [clone, button("btn-2", 2, "w-8")])
    rig.gw.start()
    try:
        rig.connected("btn-1", "btn-2")
        rig.sim.call("press", device="btn-1", type="long")
        rig.gw.wait_status(lambda d: d["ble"]["wearables"]["btn-1"]["forged"] >= 1)
        rig.connected("btn-1")  # back after the longest backoff (1 s here): still not believed
        rig.sim.call("press", device="btn-1", type="triple")
        doc = rig.gw.wait_status(lambda d: d["ble"]["wearables"]["btn-1"]["forged"] >= 2)
        counter, _ = rig.press("btn-2")  # another worker's genuine button is untouched
        wait_rec(rig.col, "sos.alarm", lambda d: d["device"] == "btn-2" and d["counter"] == counter)
        security = wait_rec(rig.col, "device.state", lambda d: d.get("reason") == "security")
    finally:
        rig.stop()
    assert [d["device"] for d in recs(rig.col, "sos.alarm")] == ["btn-2"]
    assert recs(rig.col, "sos.cancel") == []
    assert security["state"] == "rejected"
    assert "not verify" in doc["ble"]["wearables"]["btn-1"]["last_error"]
