"""Field safety (the gateway process, simulated wearables with real GATT, a real broker):
the worker on every record about their kit, an sos.ack that outlives a restart, and
alerts that reach every addressed wearable until they expire."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_wearables import Rig, recs, wait_rec
from tests.support.broker import Mosquitto
from tests.support.wearables import button, camera, event_key


@pytest.fixture
def rig(broker: Mosquitto, tmp_path: Path) -> Iterator[Rig]:
    wearables = [button("btn-1", 1, "w-7"), camera("cam-1", 1, "w-7"), button("btn-2", 2, "w-8")]
    wearables.append({**camera("cam-2", 2, "w-8"), "screen": False})
    r = Rig(broker, tmp_path, wearables, commands=True)
    r.gw.start()
    r.gw.wait_status(lambda d: d["link"]["state"] == "up")
    r.connected("btn-1", "cam-1", "btn-2", "cam-2")
    yield r
    r.stop()


def worker_of(rig: Rig, kind: str, pred: Any = lambda d: True) -> list[str | None]:
    return [d.get("worker") for d in recs(rig.col, kind) if pred(d)]


def test_every_record_of_a_workers_kit_carries_the_worker_bound_then(rig: Rig) -> None:
    rig.sim.call("battery", device="btn-1", pct=41)
    assert wait_rec(rig.col, "device.battery", lambda d: d["pct"] == 41)["worker"] == "w-7"
    connected = [m for m in rig.col.in_seq_order("device.state") if m.payload["src"] == "btn-1"]
    assert connected and all(r["d"].get("worker") == "w-7" for m in connected for r in m.payload["recs"])
    # re-bound to another worker: what follows carries w-9, what went before keeps w-7
    res = rig.command(
        "device.pair",
        {
            "id": "btn-1",
            "kind": "sos_button",
            "address": "F0:00:00:00:00:01",
            "worker": "w-9",
            "key": event_key("btn-1"),
        },
    )
    assert res["ok"]
    rig.col.wait_for(lambda _ms: "w-9" in worker_of(rig, "device.state", lambda d: d["state"] == "connected"))
    rig.connected("btn-1")
    counter, _ = rig.press("btn-1")
    alarm = wait_rec(rig.col, "sos.alarm", lambda d: d["counter"] == counter)
    assert alarm["worker"] == "w-9"
    rig.sim.call("battery", device="btn-1", pct=39)
    assert wait_rec(rig.col, "device.battery", lambda d: d["pct"] == 39)["worker"] == "w-9"
    assert wait_rec(rig.col, "device.battery", lambda d: d["pct"] == 41)["worker"] == "w-7"
    # the gateway's own reports about a wearable (src gw) name its worker too
    res = rig.command("alert.broadcast", {"id": "a-1", "level": "info", "text": "hi"})
    assert res["delivered"] == 4
    rig.col.wait_for(lambda _ms: len(recs(rig.col, "alert.delivery")) >= 4)
    by_device = {d["device"]: d["worker"] for d in recs(rig.col, "alert.delivery")}
    assert by_device == {"btn-1": "w-9", "cam-1": "w-7", "btn-2": "w-8", "cam-2": "w-8"}


def test_an_ack_after_a_restart_reaches_the_button_with_its_counter(rig: Rig) -> None:
    counter, _ = rig.press("btn-2")
    rig.col.wait_for(lambda _ms: bool(rig.col.up("sos.alarm")))
    alarm_seq = rig.col.up("sos.alarm")[0].payload["seq"]
    rig.gw.kill()  # the power cut: nothing in memory survives
    rig.gw.start()
    rig.connected("btn-2")
    res = rig.command("sos.ack", {"device": "btn-2", "alarm_seq": alarm_seq})
    assert res["ok"] and res["delivered"] == 1, res
    assert ["acknowledged", counter] in rig.sim.call("state")["wearables"]["btn-2"]["feedback"]
    done = wait_rec(rig.col, "alert.delivery", lambda d: d.get("ack") == res["id"])
    assert done["state"] == "delivered" and done["worker"] == "w-8"
    # an alarm it does not know, or another wearable's, is refused, never guessed
    for args in (
        {"device": "btn-2", "alarm_seq": alarm_seq + 1000},
        {"device": "btn-1", "alarm_seq": alarm_seq},
    ):
        refused = rig.command("sos.ack", args)
        assert not refused["ok"] and refused["error"] == "unknown_alarm", refused
    assert rig.sim.call("state")["wearables"]["btn-1"]["feedback"] == []


def test_an_alert_reaches_every_wearable_as_each_can_show_it_until_it_expires(rig: Rig) -> None:
    rig.sim.call("away", device="btn-2")  # out of range when the alert is sent
    rig.gw.wait_status(lambda d: d["ble"]["wearables"]["btn-2"]["state"] != "connected")
    res = rig.command(
        "alert.broadcast", {"id": "typhoon-9", "level": "emergency", "text": "台风：立即返港 Return to port"}
    )
    assert res["ok"] and res["wearables"] == 4 and res["delivered"] == 3 and res["pending"] == 1, res
    sim = rig.sim.call("state")["wearables"]
    assert [10, 1000] in sim["btn-1"]["alerts"]  # the emergency pattern
    assert sim["cam-1"]["texts"] == [[3, "台风：立即返港 Return to port"]]  # on its screen
    assert sim["cam-2"]["texts"] == [] and [4, 2] in sim["cam-2"]["controls"]  # no screen: its LED
    # the gateway restarts while btn-2 is away: the alert is still owed to it
    rig.gw.kill()
    rig.gw.start()
    rig.connected("btn-1")
    rig.sim.call("back", device="btn-2")
    rig.connected("btn-2", timeout=30)
    rig.col.wait_for(
        lambda _ms: any(d["device"] == "btn-2" for d in recs(rig.col, "alert.delivery")), timeout=20
    )
    assert [10, 1000] in rig.sim.call("state")["wearables"]["btn-2"]["alerts"]
    states = {d["device"]: d["state"] for d in recs(rig.col, "alert.delivery")}
    assert states == dict.fromkeys(("btn-1", "cam-1", "cam-2", "btn-2"), "delivered")
    # one that cannot be reached before it expires is reported expired, once
    rig.sim.call("away", device="cam-1")
    rig.gw.wait_status(lambda d: d["ble"]["wearables"]["cam-1"]["state"] != "connected")
    expires = int(time.time() * 1000) + 2500
    res = rig.command("alert.broadcast", {"id": "recall-2", "level": "info", "text": "x", "expires": expires})
    assert res["delivered"] == 3 and res["pending"] == 1
    late = wait_rec(rig.col, "alert.delivery", lambda d: d["alert"] == "recall-2" and d["device"] == "cam-1")
    assert late["state"] == "expired" and late["ok"] is False and late["worker"] == "w-7"
    assert [1, 300] in rig.sim.call("state")["wearables"]["btn-1"]["alerts"]  # the info pattern
