"""Signed commands: accepted once, in order, for this gateway; every attack rejected and reported."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

from floor.envelope import Signer, load_private_key
from tests.support.broker import Mosquitto, free_port
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc, gnss_device, trust_clock
from tests.support.platform import Platform, bundle, other_signer
from tests.support.pty import Pty

GW = "gw-test-1"
PAIR = {
    "id": "sos-7",
    "kind": "sos_button",
    "address": "C0:FF:EE:00:00:07",
    "worker": "w-42",
    "key": "0123456789abcdef0123456789abcdef",
}


def results(col: Collector) -> list[dict[str, Any]]:
    return [r["d"] for m in col.up("cmd.result") for r in m.payload["recs"]]


def count_errors(col: Collector, code: str) -> int:
    return sum(1 for d in results(col) if d["error"] == code)


def wait_result(col: Collector, pred: Any, timeout: float = 15) -> dict[str, Any]:
    col.wait_for(lambda ms: any(pred(d) for d in results(col)), timeout=timeout)
    return next(d for d in results(col) if pred(d))


class Rig:
    def __init__(self, broker: Mosquitto, tmp_path: Path, **kw: Any) -> None:
        self.platform = Platform(tmp_path / "platform", broker.port)
        self.pty = Pty(tmp_path / "ttyGNSS")
        self.gw = GatewayProc(
            tmp_path / "gw",
            port=broker.port,
            gw_id=GW,
            gateway_extra='groups = ["taishan"]\n',
            extra=f'[trust]\ncommand_key = "{self.platform.pub_path}"\n',
            devices=gnss_device(self.pty.link),
            **kw,
        )
        self.col = Collector(broker.port, self.gw.pub).start()

    def start(self) -> None:
        self.gw.start()
        self.gw.wait_status(lambda d: d["link"]["state"] == "up")
        # a GNSS fix makes the clock trustworthy, so expiry is enforced
        trust_clock(self.gw, self.pty)

    def stop(self) -> None:
        self.gw.stop()
        self.col.stop()
        self.platform.stop()
        self.pty.unplug()


@pytest.fixture
def rig(broker: Mosquitto, tmp_path: Path) -> Any:
    r = Rig(broker, tmp_path)
    r.start()
    yield r
    r.stop()


def test_pair_unpair_and_diag(rig: Rig) -> None:
    cid, data = rig.platform.command(GW, "device.pair", PAIR)
    rig.platform.send(GW, data)
    assert wait_result(rig.col, lambda d: d["id"] == cid)["ok"] is True
    assert rig.gw.status()["wearables"] == ["sos-7"]
    cid, data = rig.platform.command("group:taishan", "diag.snapshot")
    rig.platform.send(GW, data, topic="gridedge/v1/group/taishan/cmd")
    assert wait_result(rig.col, lambda d: d["id"] == cid)["ok"] is True
    rig.col.wait_for(lambda ms: any(m.payload["kind"] == "diag.snapshot" for m in ms))
    cid, data = rig.platform.command(GW, "device.unpair", {"id": "sos-7"})
    rig.platform.send(GW, data)
    assert wait_result(rig.col, lambda d: d["id"] == cid)["ok"] is True
    assert rig.gw.status()["wearables"] == []
    # survives a restart: pair again, restart, still paired
    cid, data = rig.platform.command(GW, "device.pair", PAIR)
    rig.platform.send(GW, data)
    wait_result(rig.col, lambda d: d["id"] == cid)
    rig.gw.stop()
    rig.gw.start()
    assert rig.gw.wait_status(lambda d: d["wearables"] == ["sos-7"])


def test_alert_broadcast_reports_delivery_per_wearable(rig: Rig) -> None:
    for i in range(2):
        _, data = rig.platform.command(
            GW, "device.pair", {**PAIR, "id": f"sos-{i}", "address": f"C0:FF:EE:00:00:0{i}"}
        )
        rig.platform.send(GW, data)
    expires = int(time.time() * 1000) + 2000
    cid, data = rig.platform.command(
        GW,
        "alert.broadcast",
        {"id": "typhoon-7", "level": "warning", "text": "Typhoon: return to shelter", "expires": expires},
    )
    rig.platform.send(GW, data)
    res = wait_result(rig.col, lambda d: d["id"] == cid)
    # neither wearable is in range: the alert waits for them, then each is reported expired
    assert res["ok"] and res["wearables"] == 2 and res["pending"] == 2 and res["delivered"] == 0
    waiting = rig.gw.status()["deliveries"]["waiting"]
    assert waiting == {"alert:typhoon-7": ["sos-0", "sos-1"]}
    deliveries = rig.col.wait_for(lambda ms: sum(1 for m in ms if m.payload["kind"] == "alert.delivery") >= 2)
    got = {
        m.payload["recs"][0]["d"]["device"]: m.payload["recs"][0]["d"]["state"]
        for m in deliveries
        if m.payload["kind"] == "alert.delivery"
    }
    assert got == {"sos-0": "expired", "sos-1": "expired"}


def flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[-10] ^= 0x01
    return bytes(b)


def resign_with_alg(platform: Platform, alg: int, payload: dict[str, Any]) -> bytes:
    key = load_private_key(platform.key_path.read_bytes())
    protected = cbor2.dumps({1: alg, 4: platform.signer.kid})
    body = cbor2.dumps(payload)
    sig = key.sign(cbor2.dumps(["Signature1", protected, b"", body]))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, body, sig]))


def test_attack_suite(rig: Rig, tmp_path: Path) -> None:
    p = rig.platform
    own = Signer(load_private_key(rig.gw.key.read_bytes()))
    cid, good = p.command(GW, "device.pair", PAIR)
    p.send(GW, good)
    assert wait_result(rig.col, lambda d: d["id"] == cid)["ok"]
    p.send(GW, rig.platform.command(GW, "device.unpair", {"id": "sos-7"})[1])
    before = rig.gw.wait_status(lambda d: d["wearables"] == [])["commands"]["accepted"]

    evil = {**PAIR, "id": "evil"}
    now = int(time.time() * 1000)
    attacks: list[tuple[str, bytes, str, str | None]] = [
        (
            "unsigned",
            cbor2.dumps(
                {
                    "v": 1,
                    "id": "u1",
                    "to": GW,
                    "cseq": 99,
                    "iat": now,
                    "exp": now + 9999,
                    "type": "device.pair",
                    "args": evil,
                }
            ),
            "bad_structure",
            None,
        ),
        ("gateway's own key", p.command(GW, "device.pair", evil, signer=own)[1], "unknown_kid", None),
        ("another key", p.command(GW, "device.pair", evil, signer=other_signer())[1], "unknown_kid", None),
        ("flipped byte", flip(p.command(GW, "device.pair", evil)[1]), "bad_signature", None),
        (
            "alg none",
            resign_with_alg(
                p,
                0,
                {
                    "v": 1,
                    "id": "a1",
                    "to": GW,
                    "cseq": 500,
                    "iat": now,
                    "exp": now + 9999,
                    "type": "device.pair",
                    "args": evil,
                },
            ),
            "bad_alg",
            None,
        ),
        (
            "alg ES256",
            resign_with_alg(
                p,
                -7,
                {
                    "v": 1,
                    "id": "a2",
                    "to": GW,
                    "cseq": 501,
                    "iat": now,
                    "exp": now + 9999,
                    "type": "device.pair",
                    "args": evil,
                },
            ),
            "bad_alg",
            None,
        ),
        ("replay", good, "replay", cid),
        ("lower cseq", p.command(GW, "device.pair", evil, cseq=0)[1], "replay", "any"),
        ("other gateway", p.command("gw-other", "device.pair", evil)[1], "wrong_target", "any"),
        ("group not ours", p.command("group:elsewhere", "device.pair", evil)[1], "wrong_target", "any"),
        ("expired", p.command(GW, "device.pair", evil, exp_in_s=-60)[1], "expired", "any"),
        ("oversized", b"\xd2\x84" + b"\x00" * (1024 * 1024), "too_large", None),
        ("malformed CBOR", b"\xd2\x84\x5f\xff\xff", "malformed_cbor", None),
        ("topic injection /", p.command(GW, "device.pair", {**evil, "id": "a/b"})[1], "bad_args", "any"),
        ("topic injection +", p.command(GW, "device.pair", {**evil, "id": "+"})[1], "bad_args", "any"),
        ("topic injection #", p.command(GW, "device.pair", {**evil, "worker": "#"})[1], "bad_args", "any"),
        ("topic injection NUL", p.command(GW, "device.pair", {**evil, "id": "x\x00"})[1], "bad_args", "any"),
    ]
    for name, data, code, _ in attacks:
        n = count_errors(rig.col, code)
        p.send(GW, data)
        deadline = time.monotonic() + 15
        while count_errors(rig.col, code) <= n:
            assert time.monotonic() < deadline, f"{name}: no cmd.result with error {code}"
            time.sleep(0.05)
        assert all(d["ok"] is False for d in results(rig.col) if d["error"] == code), name
    doc = rig.gw.status()
    assert doc["wearables"] == [], "an attack executed"
    # bad_args attacks consumed a cseq (they were validly signed), nothing else was accepted
    assert doc["commands"]["accepted"] == before + 4
    assert "Traceback" not in rig.gw.log.read_text()


def test_retained_command_is_refused(broker: Mosquitto, tmp_path: Path) -> None:
    r = Rig(broker, tmp_path)
    _, data = r.platform.command(GW, "device.pair", PAIR)
    r.platform.send(GW, data, retain=True)  # parked on the broker before the gateway subscribes
    try:
        r.start()
        res = wait_result(r.col, lambda d: d["error"] == "retained")
        assert res["ok"] is False
        assert r.gw.status()["wearables"] == []
    finally:
        r.platform.send(GW, b"", retain=True)  # clear the retained message
        r.stop()


def test_crash_mid_command_runs_it_at_most_once(broker: Mosquitto, tmp_path: Path) -> None:
    r = Rig(broker, tmp_path, env={"GRIDEDGE_FAULT_CMD_DELAY_S": "30"})
    r.start()
    try:
        cid, data = r.platform.command(GW, "device.pair", PAIR)
        r.platform.send(GW, data)
        r.gw.wait_status(lambda d: d["commands"]["last_cseq"].get(GW) == 1)  # persisted, now running
        r.gw.kill()
        r.gw.env = {}
        r.gw.start()
        res = wait_result(r.col, lambda d: d["id"] == cid)
        assert res == {"id": cid, "ok": False, "error": "interrupted", "type": "device.pair"}
        assert r.gw.status()["wearables"] == []  # it did not run, and it will not run again
        r.platform.send(GW, data)  # the platform retries the very same command: a replay
        wait_result(r.col, lambda d: d["error"] == "replay")
        assert r.gw.status()["wearables"] == []
    finally:
        r.stop()


def station(
    broker: Mosquitto, tmp_path: Path, geofence_extra: str = ""
) -> tuple[int, Platform, GatewayProc, Collector]:
    """A harbour station: an AIS receiver on UDP, a geofence, commands from a platform."""
    import socket

    udp = free_port(socket.SOCK_DGRAM)
    config = (
        "[ais]\nmin_interval_s = 0.0\noutside_min_interval_s = 0.0\n"
        f'[[geofences]]\nid = "harbour"\n{geofence_extra}'
        "polygon = [[21.0, 112.0], [21.0, 113.0], [22.0, 113.0], [22.0, 112.0]]\n"
        f'[[devices]]\nid = "ais0"\nkind = "ais"\nurl = "udp://127.0.0.1:{udp}"\n'
    )
    platform = Platform(tmp_path / "platform", broker.port)
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        gw_id=GW,
        devices=config,
        extra=f'[trust]\ncommand_key = "{platform.pub_path}"\n',
    )
    return udp, platform, gw, Collector(broker.port, gw.pub).start()


def test_typhoon_recall_on_a_station_answers_with_vessels_outside(broker: Mosquitto, tmp_path: Path) -> None:
    import socket

    from tests.integration.test_maritime import ais_sentence

    udp, platform, gw, col = station(broker, tmp_path)
    gw.start()
    try:
        gw.wait_device_open("ais0")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for mmsi in (412000001, 412000002):  # both moored in the harbour
                tx.sendto(ais_sentence(mmsi=mmsi, lat=21.5, lon=112.5, status=5), ("127.0.0.1", udp))
            time.sleep(0.5)
            tx.sendto(
                ais_sentence(mmsi=412000002, lat=20.5, lon=112.5, status=0, speed=6.0), ("127.0.0.1", udp)
            )
        # the set changed: a snapshot comes by itself
        col.wait_for(
            lambda ms: any(
                m.payload["kind"] == "vessels.outside" and m.payload["recs"][0]["d"]["count"] == 1 for m in ms
            ),
            timeout=15,
        )
        n = len(col.up("vessels.outside"))
        cid, data = platform.command(
            GW,
            "alert.broadcast",
            {"id": "typhoon-8", "level": "recall", "text": "All vessels return to harbour"},
        )
        platform.send(GW, data)
        assert wait_result(col, lambda d: d["id"] == cid)["ok"]
        msgs = col.wait_for(
            lambda ms: sum(1 for m in ms if m.payload["kind"] == "vessels.outside") > n, timeout=15
        )
    finally:
        gw.stop()
        col.stop()
        platform.stop()
    snap = [m for m in msgs if m.payload["kind"] == "vessels.outside"][-1].payload["recs"][0]["d"]
    assert snap["geofence"] == "harbour"
    assert [(v["mmsi"], v["lat"]) for v in snap["vessels"]] == [(412000002, 20.5)]


def apply(rig: Rig, text: str, rollback_after_s: float = 30, **kw: Any) -> tuple[str, dict[str, Any]]:
    args = {"bundle": bundle(rig.platform, GW, text, **kw), "rollback_after_s": rollback_after_s}
    cid, data = rig.platform.command(GW, "config.apply", args)
    rig.platform.send(GW, data)
    return cid, wait_result(rig.col, lambda d: d["id"] == cid)


def applied_text(rig: Rig) -> str | None:
    path = rig.gw.state / "applied" / "gateway.toml"
    return path.read_text() if path.exists() else None


def test_config_apply_without_restart(rig: Rig) -> None:
    assert rig.gw.proc is not None
    pid = rig.gw.proc.pid
    text = rig.gw.config.read_text().replace('groups = ["taishan"]', 'groups = ["taishan", "jiangmen"]')
    before = rig.gw.config.read_text()
    _, res = apply(rig, text)
    assert res["ok"] is True and res["applied"] is True
    # the technician's file stays as it was; the applied one, in the state dir, is in effect
    assert rig.gw.config.read_text() == before
    assert applied_text(rig) == text
    # the new group is live: a command on its topic is accepted
    rig.gw.wait_status(lambda d: d["link"]["state"] == "up" and d["epoch"] >= 2)
    gid, data = rig.platform.command("group:jiangmen", "diag.snapshot")
    rig.platform.send(GW, data, topic="gridedge/v1/group/jiangmen/cmd")
    assert wait_result(rig.col, lambda d: d["id"] == gid)["ok"] is True
    assert rig.gw.proc is not None and rig.gw.proc.pid == pid and rig.gw.proc.poll() is None
    health = rig.col.wait_for(
        lambda ms: any(
            m.payload["kind"] == "gateway.health"
            and m.payload["recs"][0]["d"].get("reason") == "config applied"
            for m in ms
        )
    )
    assert health


def test_config_with_a_wrong_broker_rolls_back_by_itself(rig: Rig) -> None:
    good = rig.gw.config.read_text()
    bad = good.replace(f"port = {rig.col.port}", "port = 1")
    assert bad != good
    _, res = apply(rig, bad, rollback_after_s=4)
    assert res["ok"] is True
    # the gateway cannot reach port 1, misses its health check, and restores the old config
    rig.col.wait_for(
        lambda ms: any(
            m.payload["kind"] == "gateway.health"
            and m.payload["recs"][0]["d"].get("reason") == "config rolled back"
            for m in ms
        ),
        timeout=30,
    )
    assert rig.gw.config.read_text() == good
    assert applied_text(rig) is None  # nothing was applied before: the technician's file again
    rig.gw.wait_status(lambda d: d["link"]["state"] == "up")


def test_config_adding_a_trust_key_without_rotation_is_refused(rig: Rig) -> None:
    good = rig.gw.config.read_text()
    # point the trust anchor at a key the attacker knows: the gateway's own public key
    evil = good.replace(f'command_key = "{rig.platform.pub_path}"', f'command_key = "{rig.gw.pub}"')
    assert evil != good
    _, res = apply(rig, evil)
    assert res == {
        "id": res["id"],
        "ok": False,
        "error": "trust_change_refused",
        "detail": (
            "trust.command_key changed: that needs a rotation by the current command key and the new one"
        ),
    }
    _, res = apply(rig, good.replace("batch_ms = 50", "batch_ms = 60"), signer=other_signer())
    assert res["ok"] is False and res["error"] == "bad_bundle"
    assert rig.gw.config.read_text() == good and applied_text(rig) is None


def test_a_recall_after_a_power_cut_lists_the_whole_home_fleet(broker: Mosquitto, tmp_path: Path) -> None:
    """Harbour state and the home fleet survive a SIGKILL in the middle of a recall."""
    import json
    import socket

    from tests.integration.test_maritime import ais_sentence

    fleet = [412000001, 412000002, 412000003, 412000004]
    udp, platform, gw, col = station(broker, tmp_path, f"fleet = {fleet}\n")

    def command(type_: str, args: dict[str, Any]) -> dict[str, Any]:
        cid, data = platform.command(GW, type_, args)
        platform.send(GW, data)
        return wait_result(col, lambda d: d["id"] == cid)

    def harbour() -> dict[str, Any]:
        try:
            return dict(json.loads((gw.state / "harbour.json").read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    gw.start()
    try:
        gw.wait_device_open("ais0")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for mmsi in (412000001, 412000002, 412000009):  # moored in the harbour (9: a visitor)
                tx.sendto(ais_sentence(mmsi=mmsi, lat=21.5, lon=112.5, status=5), ("127.0.0.1", udp))
            time.sleep(0.5)
            for mmsi, lat in ((412000002, 20.5), (412000009, 20.6), (412000003, 20.7)):  # at sea
                tx.sendto(
                    ais_sentence(mmsi=mmsi, lat=lat, lon=112.5, status=0, speed=6.0), ("127.0.0.1", udp)
                )
        deadline = time.monotonic() + 15
        while len(harbour().get("vessels", [])) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert command("alert.broadcast", {"id": "typhoon-8", "level": "recall", "text": "Return"})["ok"]
        gw.kill()  # the power cut, in the middle of the recall
        before = len(col.up("vessels.outside"))
        gw.start()
        gw.wait_device_open("ais0")
        # the platform adds a boat to the home fleet: a fresh list comes at once
        res = command("fleet.set", {"geofence": "harbour", "mmsi": [*fleet, 412000005]})
        assert res["ok"] and res["fleet"] == 5
        msgs = col.wait_for(lambda ms: sum(1 for m in ms if m.payload["kind"] == "vessels.outside") > before)
        refused = command("fleet.set", {"geofence": "nowhere", "mmsi": fleet})
        assert not refused["ok"] and refused["error"] == "bad_args"
    finally:
        gw.stop()
        col.stop()
        platform.stop()
    snap = [m for m in msgs if m.payload["kind"] == "vessels.outside"][-1].payload["recs"][0]["d"]
    listed = {v["mmsi"]: (v["state"], v.get("lat")) for v in snap["vessels"]}
    assert listed == {
        412000002: ("left", 20.5),
        412000003: ("outside", 20.7),
        412000004: ("unheard", None),
        412000005: ("unheard", None),
        412000009: ("left", 20.6),
    }
    assert snap["inside"] == 1 and snap["fleet"] == 5 and snap["count"] == 5
