"""Wearables over BLE, black box: the gateway process, simulated wearables in their own
process (bumble devices with real GATT, reached over HCI), a real mosquitto, and every
message verified with an independent COSE implementation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.ble import profiles as p
from drivers.ble.rpa import resolves
from tests.support.broker import Mosquitto
from tests.support.collector import Collector, Message
from tests.support.gateway import GatewayProc
from tests.support.platform import Platform
from tests.support.prefill import prefill
from tests.support.wearables import SimProc, button, camera, devices_toml, event_key

GW = "gw-test-1"
IRK = "ec0234a357c8ad05341010a60a397d9b"


def recs(col: Collector, kind: str, src: str | None = None) -> list[dict[str, Any]]:
    return [r["d"] for m in col.up(kind) if src is None or m.payload["src"] == src for r in m.payload["recs"]]


def wait_rec(col: Collector, kind: str, pred: Any = lambda d: True, timeout: float = 15.0) -> dict[str, Any]:
    col.wait_for(lambda _ms: any(pred(d) for d in recs(col, kind)), timeout=timeout)
    return next(d for d in recs(col, kind) if pred(d))


def states(col: Collector, dev: str) -> list[str]:
    msgs = [m for m in col.in_seq_order("device.state") if m.payload["src"] == dev]
    return [r["d"]["state"] for m in msgs for r in m.payload["recs"]]


class Rig:
    def __init__(
        self,
        broker: Mosquitto,
        tmp_path: Path,
        wearables: list[dict[str, Any]],
        *,
        commands: bool = False,
        extra: str = "",
        gateway_extra: str = "",
    ) -> None:
        self.broker = broker
        self.sim = SimProc(tmp_path / "sim", wearables)
        self.platform = Platform(tmp_path / "platform", broker.port) if commands else None
        trust = f'[trust]\ncommand_key = "{self.platform.pub_path}"\n' if self.platform else ""
        self.gw = GatewayProc(
            tmp_path / "gw",
            port=broker.port,
            gw_id=GW,
            extra=trust + self.sim.ble_config() + extra,
            devices=devices_toml(wearables),
            gateway_extra=gateway_extra,
        )
        self.col = Collector(broker.port, self.gw.pub).start()

    def connected(self, *devices: str, timeout: float = 20.0) -> None:
        for dev in devices:
            assert self.sim.call("connected", device=dev, timeout=timeout)["connected"], dev
            self.gw.wait_status(
                lambda d, dev=dev: d["ble"]["wearables"].get(dev, {}).get("state") == "connected"
            )

    def press(self, dev: str, kind: str = "long", timeout: float = 10.0) -> tuple[int, float]:
        counter = self.sim.call("press", device=dev, type=kind)["counter"]
        answered = self.sim.call("wait", device=dev, counter=counter, timeout=timeout)["answered_ms"]
        return counter, answered

    def command(self, type_: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self.platform is not None
        cid, data = self.platform.command(GW, type_, args)
        self.platform.send(GW, data)
        return wait_rec(self.col, "cmd.result", lambda d: d["id"] == cid)

    def stop(self) -> None:
        self.gw.kill()
        self.sim.stop()
        self.col.stop()
        if self.platform is not None:
            self.platform.stop()


@pytest.fixture
def rig(broker: Mosquitto, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(
        broker,
        tmp_path,
        [button("btn-1", 1, "w-7"), camera("cam-1", 1, "w-7"), button("btn-2", 2, "w-8")],
        commands=True,
    )
    r.gw.start()
    r.gw.wait_status(lambda d: d["link"]["state"] == "up")
    r.connected("btn-1", "cam-1", "btn-2")
    yield r
    r.stop()


def test_sos_press_to_signed_alarm_to_feedback_and_camera_starts(rig: Rig) -> None:
    counter, answered_ms = rig.press("btn-1")
    alarm = wait_rec(rig.col, "sos.alarm")
    msg = rig.col.up("sos.alarm")[0].payload
    assert msg["prio"] == 0 and msg["src"] == "btn-1" and len(msg["recs"]) == 1
    assert alarm["device"] == "btn-1" and alarm["worker"] == "w-7" and alarm["counter"] == counter
    button_state = rig.sim.call("state")["wearables"]["btn-1"]
    assert ["received", counter] in button_state["feedback"] and not button_state["pending"]
    # the wearer's camera was asked to record (reason: SOS), and says it is recording
    rec = wait_rec(rig.col, "camera.recording", lambda d: d["recording"])
    assert rec["device"] == "cam-1" and rec["worker"] == "w-7"
    assert [1, int(p.CameraReason.SOS)] in rig.sim.call("state")["wearables"]["cam-1"]["controls"]
    # the other worker's button is untouched
    assert rig.sim.call("state")["wearables"]["btn-2"]["feedback"] == []
    # cancel: three presses
    counter2, _ = rig.press("btn-1", "triple")
    cancel = wait_rec(rig.col, "sos.cancel")
    assert cancel["counter"] == counter2 and rig.col.up("sos.cancel")[0].payload["prio"] == 0
    assert ["cancelled", counter2] in rig.sim.call("state")["wearables"]["btn-1"]["feedback"]
    print(f"press to 'received' feedback: {answered_ms:.1f} ms")


def test_replayed_or_repeated_event_is_not_a_second_alarm(rig: Rig) -> None:
    counter, _ = rig.press("btn-1")
    uptime = wait_rec(rig.col, "sos.alarm")["uptime_ms"]
    key = bytes.fromhex(event_key("btn-1"))  # what the button signs with (its first boot)
    replay = p.encode_sos_event(
        p.SosEvent(p.SosEventType.LONG_PRESS, counter, uptime, boot=1), key
    )  # same bytes
    # far behind the last committed counter (beyond the 64 remembered): stale, not a press
    older = p.encode_sos_event(
        p.SosEvent(p.SosEventType.LONG_PRESS, (counter - 100) & 0xFFFF, uptime + 5, boot=1), key
    )
    for raw in (replay, replay, older):
        rig.sim.call("replay", device="btn-1", hex=raw.hex())
    garbage = b"\x03\x02\x00\x00\x00\x00\x00\x00"  # profile version 3
    rig.sim.call("replay", device="btn-1", hex=garbage.hex())
    rig.sim.call("replay", device="btn-1", hex="0102")  # too short
    doc = rig.gw.wait_status(lambda d: d["ble"]["wearables"]["btn-1"]["repeats"] >= 3)
    rig.gw.wait_status(lambda d: d["ble"]["wearables"]["btn-1"]["rejected"] >= 2)
    counter2, _ = rig.press("btn-1")  # a genuinely new press is an alarm
    rig.col.wait_for(lambda _ms: len(recs(rig.col, "sos.alarm")) >= 2)
    time.sleep(0.5)
    assert [a["counter"] for a in recs(rig.col, "sos.alarm")] == [counter, counter2]
    assert doc["ble"]["wearables"]["btn-1"]["alarms"] == 1


def test_battery_marks_and_link_faults(rig: Rig) -> None:
    rig.sim.call("battery", device="btn-2", pct=14)
    batt = wait_rec(rig.col, "device.battery", lambda d: d["pct"] == 14)
    assert batt == {"pct": 14, "worker": "w-8"}  # the worker it is bound to
    assert (
        next(m for m in rig.col.up("device.battery") if m.payload["recs"][0]["d"]["pct"] == 14).payload[
            "prio"
        ]
        == 1
    )  # a change is an event
    digest = rig.sim.call("mark", device="cam-1")["sha256"]
    mark = wait_rec(rig.col, "camera.mark")
    assert mark["sha256"] == digest and mark["device"] == "cam-1"
    # the peripheral ends the link: reported, then reconnected by the gateway
    rig.sim.call("drop", device="btn-2")
    rig.col.wait_for(lambda _ms: states(rig.col, "btn-2").count("connected") >= 2, timeout=20)
    assert "disconnected" in states(rig.col, "btn-2")
    # a device that stops answering is found out by the liveness probe and reconnected
    rig.sim.call("mute", device="btn-1")
    rig.gw.wait_status(lambda d: d["ble"]["wearables"]["btn-1"]["silent"] >= 1, timeout=20)
    # the status file is written at once; the device.state message follows through the outbox
    rig.col.wait_for(
        lambda _ms: any(d.get("reason") == "silent" for d in recs(rig.col, "device.state", "btn-1")),
        timeout=10,
    )
    rig.sim.call("unmute", device="btn-1")
    rig.connected("btn-1")
    rig.press("btn-1")
    wait_rec(rig.col, "sos.alarm")


def test_commands_reach_the_wearables(rig: Rig) -> None:
    counter, _ = rig.press("btn-1")
    rig.col.wait_for(lambda _ms: bool(rig.col.up("sos.alarm")))
    alarm_seq = rig.col.up("sos.alarm")[0].payload["seq"]
    res = rig.command("sos.ack", {"device": "btn-1", "alarm_seq": alarm_seq})
    assert res["ok"] and res["delivered"] == 1
    assert ["acknowledged", counter] in rig.sim.call("state")["wearables"]["btn-1"]["feedback"]
    ack = wait_rec(rig.col, "alert.delivery", lambda d: "ack" in d)
    assert ack["ok"] is True and ack["device"] == "btn-1" and ack["alarm_seq"] == alarm_seq
    res = rig.command(
        "alert.broadcast", {"id": "typhoon-9", "level": "warning", "text": "Return to base", "expires": 0}
    )
    assert res["ok"] and res["wearables"] == 3 and res["delivered"] == 3
    got = rig.col.wait_for(lambda _ms: len([d for d in recs(rig.col, "alert.delivery") if "alert" in d]) >= 3)
    assert got
    assert {d["device"]: d["ok"] for d in recs(rig.col, "alert.delivery") if "alert" in d} == {
        "btn-1": True,
        "btn-2": True,
        "cam-1": True,
    }
    sim = rig.sim.call("state")["wearables"]
    assert ["alert", 0] in sim["btn-2"]["feedback"]
    assert [int(p.CameraCommand.ALERT), int(p.CameraReason.PLATFORM)] in sim["cam-1"]["controls"]
    # unpair at run time: the gateway lets go of the button and no longer believes it
    assert rig.command("device.unpair", {"id": "btn-2"})["ok"]
    rig.col.wait_for(
        lambda _ms: "unpaired" in states(rig.col, "btn-2") or "disconnected" in states(rig.col, "btn-2")
    )
    unheard = rig.sim.call("press", device="btn-2", type="long")["counter"]
    # the control: a paired button pressed after it is answered and raises its alarm
    counter2, _ = rig.press("btn-1")
    wait_rec(rig.col, "sos.alarm", lambda d: d["counter"] == counter2)
    assert all(a["device"] != "btn-2" for a in recs(rig.col, "sos.alarm"))
    assert unheard in rig.sim.call("state")["wearables"]["btn-2"]["pending"]  # never answered


def test_strangers_are_reported_never_believed(broker: Mosquitto, tmp_path: Path) -> None:
    ws = [button("btn-1", 1), {**button("stranger", 66), "stranger": True}]
    r = Rig(broker, tmp_path, ws)
    r.gw.start()
    try:
        r.connected("btn-1")
        unknown = wait_rec(r.col, "device.unknown", lambda d: d["address"] == "F0:00:00:00:00:42")
        assert unknown["services"] == ["sos"]
        r.sim.call("press", device="stranger", type="long")
        # the control: the paired button, pressed after the stranger, raises its alarm
        counter = r.sim.call("press", device="btn-1", type="long")["counter"]
        wait_rec(r.col, "sos.alarm", lambda d: d["counter"] == counter)
        assert not r.sim.call("state")["wearables"]["stranger"]["connected"]
        assert [a["device"] for a in recs(r.col, "sos.alarm")] == ["btn-1"]
        # past unknown_report_s it is reported again, with the adverts counted meanwhile
        r.col.wait_for(
            lambda _ms: (
                len([d for d in recs(r.col, "device.unknown") if d["address"] == "F0:00:00:00:00:42"]) >= 2
            ),
            timeout=20,
        )
        again = [d for d in recs(r.col, "device.unknown") if d["address"] == "F0:00:00:00:00:42"]
        assert len(again) >= 2 and again[-1]["adverts"] > 1
        assert r.gw.status()["ble"]["unknown_adverts"] > len(again)
    finally:
        r.stop()


def test_device_paired_at_run_time_by_irk(broker: Mosquitto, tmp_path: Path) -> None:
    """A wearable with a resolvable private address is recognised by its IRK."""
    key = event_key("btn-rpa")
    w = {
        "id": "btn-rpa",
        "kind": "sos_button",
        "address": "F2:00:00:00:00:01",
        "irk": IRK,
        "worker": "w-3",
        "key": key,
    }
    r = Rig(broker, tmp_path, [button("btn-1", 1), {**w, "stranger": True}], commands=True)
    r.gw.start()
    try:
        r.connected("btn-1")
        # before pairing it is a stranger, seen under a resolvable private address
        seen = wait_rec(r.col, "device.unknown")["address"]
        assert seen != w["address"] and resolves(bytes.fromhex(IRK), seen)
        assert r.sim.call("connected", device="btn-rpa", timeout=1.0)["connected"] is False
        pair = {"id": "btn-rpa", "kind": "sos_button", "irk": IRK, "worker": "w-3"}
        refused = r.command("device.pair", pair)  # an SOS button is believed only with its key
        assert not refused["ok"] and "key" in refused["detail"]
        res = r.command("device.pair", {**pair, "key": key})
        assert res["ok"]
        r.connected("btn-rpa")
        counter, _ = r.press("btn-rpa")
        alarm = wait_rec(r.col, "sos.alarm")
        assert alarm["device"] == "btn-rpa" and alarm["worker"] == "w-3" and alarm["counter"] == counter
    finally:
        r.stop()


@pytest.mark.slow
def test_alarm_survives_broker_down_and_sigkill_then_overtakes_a_100k_backlog(
    fast_broker: Mosquitto, tmp_path: Path
) -> None:
    broker = fast_broker
    ws = [button("btn-1", 1)]
    r = Rig(broker, tmp_path, ws)
    r.col.stop()
    backlog = 100_000
    hw = prefill(r.gw.state, r.gw.key, GW, backlog)
    broker.kill()  # the uplink is down
    r.gw.start()
    try:
        r.connected("btn-1")
        counter, answered_ms = r.press("btn-1")  # "received": it is on disk
        r.gw.kill()  # power cut right after the button was told
        broker.start()
        col = Collector(broker.port, r.gw.pub, unverified_kinds=frozenset({"gnss.fix"})).start()
        r.col = col
        r.gw.start()
        msgs = col.wait_for(lambda ms: any(m.topic.endswith("/sos.alarm") for m in ms), timeout=60)
        col.wait_for(lambda ms: len(ms) > 1000, timeout=60)  # the backlog drains behind it
    finally:
        r.stop()
    assert not col.invalid
    up = [m for m in msgs if m.payload["seq"]]
    first: Message = up[0]
    assert first.payload["kind"] == "sos.alarm", [m.payload["kind"] for m in up[:5]]
    assert first.payload["recs"][0]["d"]["counter"] == counter and first.payload["seq"] > hw
    alarms = [m for m in col.up("sos.alarm")]
    assert len({m.payload["seq"] for m in alarms}) == 1  # once, not again after the restart
    print(f"press to 'received' with the broker down: {answered_ms:.1f} ms")


def test_ten_wearables_on_one_gateway(broker: Mosquitto, tmp_path: Path) -> None:
    """One scanner, ten connections: every button connected, every press an alarm."""
    ws = [button(f"btn-{i}", i + 10, f"w-{i}") for i in range(10)]
    r = Rig(broker, tmp_path, ws)
    r.gw.start()
    try:
        r.connected(*(w["id"] for w in ws), timeout=40)
        counters = {w["id"]: r.sim.call("press", device=w["id"], type="long")["counter"] for w in ws}
        for dev, counter in counters.items():
            r.sim.call("wait", device=dev, counter=counter, timeout=15)
        r.col.wait_for(lambda _ms: len(recs(r.col, "sos.alarm")) >= 10, timeout=20)
        doc = r.gw.status()
    finally:
        r.stop()
    assert sorted(a["device"] for a in recs(r.col, "sos.alarm")) == sorted(counters)
    assert all(s["state"] == "connected" for s in doc["ble"]["wearables"].values())
