"""A maritime station end to end: AIS over pty and UDP, DSC over pty, distress ahead of a backlog."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pyais
import pytest

from drivers.dsc.parse import DscCall, DscParser
from drivers.gnss.sim import sentence
from tests.support.broker import Mosquitto, free_port
from tests.support.collector import Collector, Message
from tests.support.gateway import GatewayProc
from tests.support.prefill import prefill
from tests.support.pty import Pty

AIS_OFF = "[ais]\nmin_interval_s = 0.0\nmin_course_change_deg = 0.0\ndedup_window_s = 0.0\n"


def device(dev_id: str, kind: str, where: str) -> str:
    key = "url" if "://" in where else "port"
    return f'[[devices]]\nid = "{dev_id}"\nkind = "{kind}"\n{key} = "{where}"\n'


def ais_sentence(**fields: str | int | float) -> bytes:
    (s,) = pyais.encode_dict({"type": 1, **fields}, radio_channel="A", talker_id="AI", sentence_type="VDM")
    return s.encode() + b"\r\n"


def ais_mmsis(msgs: list[Message]) -> set[int]:
    return {r["d"]["mmsi"] for m in msgs if m.payload["kind"] == "ais.position" for r in m.payload["recs"]}


def sample(corpora: Path) -> bytes:
    raw = (corpora / "gpsd/test/sample.aivdm").read_bytes()
    return b"".join(ln for ln in raw.splitlines(True) if not ln.startswith(b"#"))


def test_ais_through_pty_matches_gpsd(corpora: Path, broker: Mosquitto, tmp_path: Path) -> None:
    pty = Pty(tmp_path / "ttyAIS")
    gw = GatewayProc(
        tmp_path / "gw", port=broker.port, devices=AIS_OFF + device("ais0", "ais", str(pty.link))
    )
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    ref = [json.loads(ln) for ln in (corpora / "gpsd/test/sample.aivdm.js.chk").read_text().splitlines()]
    positions = [r for r in ref if r["type"] in (1, 2, 3, 9, 18, 19, 27)]
    try:
        gw.wait_device_open("ais0")
        pty.write_in_thread(sample(corpora)).join(timeout=30)
        col.wait_for(
            lambda ms: (
                sum(len(m.payload["recs"]) for m in ms if m.payload["kind"] == "ais.position")
                >= len(positions)
            ),
            timeout=30,
        )
        doc = gw.status()
    finally:
        gw.stop()
        col.stop()
        pty.unplug()
    assert not col.invalid
    got = [r["d"] for m in col.up("ais.position") for r in m.payload["recs"]]
    assert [(d["msg_type"], d["mmsi"]) for d in got] == [(r["type"], r["mmsi"]) for r in positions]
    for d, r in zip(got, positions, strict=True):
        if "lat" in d:
            tol = 2e-3 if r["type"] == 27 else 1e-6  # type 27 is 1/10 minute
            assert abs(d["lat"] - r["lat"]) <= tol and abs(d["lon"] - r["lon"]) <= tol, (d, r)
        assert d["station"] == "ais0"
    statics = {r["d"]["mmsi"]: r["d"] for m in col.up("ais.static") for r in m.payload["recs"]}
    for r in ref:
        if r["type"] == 5:
            assert statics[r["mmsi"]]["name"] == r["shipname"]
    assert doc["devices"]["ais0"]["rejected"]  # the sample's malformed examples were counted


def test_ais_over_udp_with_duplicates_collapsed(broker: Mosquitto, tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    gw = GatewayProc(
        tmp_path / "gw", port=broker.port, devices=device("ais-udp", "ais", f"udp://127.0.0.1:{port}")
    )
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    try:
        gw.wait_device_open("ais-udp")
        line = ais_sentence(mmsi=412345678, lat=21.92, lon=112.80, speed=7.5, course=45.0, status=0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(3):  # the same report relayed three times
                tx.sendto(line, ("127.0.0.1", port))
        col.wait_for(lambda ms: any(m.payload["kind"] == "ais.position" for m in ms), timeout=15)
        doc = gw.wait_status(lambda d: d["ais"]["duplicates"] >= 2)
    finally:
        gw.stop()
        col.stop()
    (msg,) = col.up("ais.position")
    (rec,) = msg.payload["recs"]
    assert rec["d"]["mmsi"] == 412345678 and rec["d"]["sog"] == 7.5
    assert abs(rec["d"]["lat"] - 21.92) < 1e-5
    assert doc["ais"]["duplicates"] == 2


def heard(msgs: list[Message]) -> int:
    """Reports behind these messages: each one, plus what was folded into it."""
    return sum(1 + r["d"].get("folded", 0) for m in msgs for r in m.payload["recs"])


def test_dsc_distress_through_pty(corpora: Path, broker: Mosquitto, tmp_path: Path) -> None:
    pty = Pty(tmp_path / "ttyDSC")
    gw = GatewayProc(tmp_path / "gw", port=broker.port, devices=device("vhf", "dsc", str(pty.link)))
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    lines = [
        ln for ln in (corpora / "dsc/dsc_dse_samples.nmea").read_bytes().splitlines() if ln.startswith(b"$")
    ]
    try:
        gw.wait_device_open("vhf")
        pty.write(b"\r\n".join(lines) + b"\r\n")
        reference = DscParser()
        expected = reference.feed(b"\r\n".join(lines) + b"\r\n", now=0) + reference.flush()
        n_distress = sum(1 for e in expected if getattr(e, "distress", False))
        # The sample repeats one ship's distress with a new nature each line: one incident.
        # Its first call goes up at once, the rest fold into the one that carries its last
        # state once the incident's minimum gap (5 s) has passed.
        last = {e.data["mmsi"]: e.data for e in expected if isinstance(e, DscCall) and e.distress}
        col.wait_for(
            lambda ms: any(r["d"].get("folded") for m in col.up("dsc.distress") for r in m.payload["recs"]),
            30,
        )
        doc = gw.status()
    finally:
        gw.stop()
        col.stop()
        pty.unplug()
    distress = [m.payload for m in col.up("dsc.distress")]
    # every call accounted for: up, or folded into one that went up (a pure repeat of the
    # cancel waits for the incident's repeat interval, 60 s, and is not counted yet)
    assert n_distress - 1 <= heard(col.up("dsc.distress")) <= n_distress
    assert len(distress) < n_distress  # folded, not one message per repeat
    ups: dict[int, dict[str, object]] = {}
    for p in distress:
        ups[p["recs"][0]["d"]["mmsi"]] = p["recs"][0]["d"]
    assert {m: (d["nature"], d.get("cancel")) for m, d in ups.items()} == {
        m: (d["nature"], d.get("cancel")) for m, d in last.items()
    }
    assert all(p["prio"] == 0 for p in distress)
    adrift = distress[0]["recs"][0]["d"]
    assert adrift["mmsi"] == 338040079 and adrift["nature"] == "adrift"
    assert abs(adrift["lat"] - 42.5243) < 1e-4 and abs(adrift["lon"] + 83.2075) < 1e-4
    assert any(p["recs"][0]["d"].get("cancel") for p in distress)
    assert doc["devices"]["vhf"]["rejected"] == {"malformed": 1, "unsupported": 1, "bad_value": 1}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ais", "dsc"])
def test_distress_overtakes_a_100k_backlog(kind: str, fast_broker: Mosquitto, tmp_path: Path) -> None:
    broker = fast_broker
    pty = Pty(tmp_path / "tty")
    gw = GatewayProc(tmp_path / "gw", port=broker.port, devices=device("radio", kind, str(pty.link)))
    backlog = 100_000
    hw = prefill(gw.state, gw.key, gw.gw_id, backlog)
    col = Collector(broker.port, gw.pub, unverified_kinds=frozenset({"gnss.fix"})).start()
    gw.start()
    try:
        gw.wait_device_open("radio")
        col.wait_for(lambda ms: len(ms) > 2000, timeout=60)  # the backlog is draining
        time.sleep(0.5)
        if kind == "ais":
            line = ais_sentence(mmsi=970012345, lat=21.91, lon=112.79, status=14, speed=0.0, course=0.0)
        else:
            line = sentence("CDDSC,12,3380400790,12,05,00,1423108312,2019,,,S,")  # sinking
        written = time.monotonic()
        pty.write(line)
        msgs = col.wait_for(lambda ms: any(m.topic.endswith("distress") for m in ms), timeout=30)
        link = gw.status()["link"]
    finally:
        gw.kill()
        col.stop()
        pty.unplug()
    assert not col.invalid
    i = next(i for i, m in enumerate(msgs) if m.topic.endswith("distress"))
    alarm = msgs[i]
    assert alarm.payload["kind"] == f"{kind}.distress" and alarm.payload["prio"] == 0
    before = [m for m in msgs[:i] if m.arrived >= written and m.topic.endswith("gnss.fix")]
    drained = sum(1 for m in msgs[:i] if m.topic.endswith("gnss.fix"))
    # Nothing the gateway sent after the alarm was committed went out before it: the
    # only messages ahead of it were already on the wire (the in-flight window).
    assert link["life_safety_overtaken_max"] == 0
    # the backlog's pacing is reported: a window within its bounds, and no more of the
    # backlog ahead of the alarm on the wire than the session's in-flight cap
    assert 2 <= link["backlog_window"] <= 64 and link["backlog_queueing_ms"] >= 0
    assert link["life_safety_backlog_ahead_max"] <= 64
    assert drained < backlog - 10_000 and alarm.payload["seq"] > hw
    latency_ms = (alarm.arrived - written) * 1000
    print(f"{kind} distress: {latency_ms:.1f} ms from sentence to delivery, {len(before)} delivered between")


def test_ais_from_a_tcp_feed_that_drops_and_comes_back(broker: Mosquitto, tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    gw = GatewayProc(
        tmp_path / "gw", port=broker.port, devices=device("ais-tcp", "ais", f"tcp://127.0.0.1:{port}")
    )
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    try:
        for i, mmsi in enumerate((412000101, 412000102)):
            server.settimeout(20)
            conn, _ = server.accept()  # the gateway (re)connects to the aggregator
            conn.sendall(ais_sentence(mmsi=mmsi, lat=21.92, lon=112.8, speed=3.0, course=10.0, status=0))
            col.wait_for(lambda ms: mmsi in ais_mmsis(ms), timeout=15)  # noqa: B023 (used at once)
            conn.close()  # the aggregator drops the connection
            if i == 0:
                gw.wait_status(lambda d: d["devices"]["ais-tcp"]["gone"] >= 1)
    finally:
        gw.stop()
        col.stop()
        server.close()


def test_datagrams_received_before_a_stop_are_kept(broker: Mosquitto, tmp_path: Path) -> None:
    """A busy feed is read every 0.1 s; what reached the socket when the gateway is told
    to stop is still read, committed and sent after the restart."""
    port = free_port(socket.SOCK_DGRAM)
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        devices=AIS_OFF + device("ais-udp", "ais", f"udp://127.0.0.1:{port}"),
        outbox="batch_ms = 1500",
    )
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    mmsis = set(range(412440400, 412440410))
    try:
        gw.wait_device_open("ais-udp")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for m in sorted(mmsis):
                tx.sendto(ais_sentence(mmsi=m, lat=21.9, lon=112.8, status=0), ("127.0.0.1", port))
        assert gw.stop() == 0
        gw.start()
        col.wait_for(lambda ms: mmsis <= ais_mmsis(ms), timeout=30)
    finally:
        gw.stop()
        col.stop()
