"""A GNSS receiver that is unplugged, goes silent, or talks garbage never takes the gateway down."""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.support.broker import Mosquitto
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc, epochs, gnss_rig


def fixes_at(col: Collector) -> set[int]:
    return {r["d"]["utc"] for m in col.up("gnss.fix") for r in m.payload["recs"] if "utc" in r["d"]}


def states(col: Collector) -> list[str]:
    return [m.payload["recs"][0]["d"]["state"] for m in col.in_seq_order("device.state")]


def test_unplug_and_replug(broker: Mosquitto, tmp_path: Path) -> None:
    with gnss_rig(broker.port, tmp_path) as (pty, gw, col):
        pty.write(epochs(1_790_000_000))
        col.wait_for(lambda ms: 1_790_000_001_000 in fixes_at(col), timeout=20)
        pty.replug()  # the USB adapter is pulled and put back: a new tty behind the same path
        gw.wait_device_open("gnss0", opened=2)
        pty.write(epochs(1_790_000_100))
        col.wait_for(lambda ms: 1_790_000_101_000 in fixes_at(col), timeout=20)
        doc = gw.status()
    assert doc["devices"]["gnss0"]["gone"] >= 1
    assert states(col)[:3] == ["connected", "disconnected", "connected"]


def test_silence_reopens_the_port(broker: Mosquitto, tmp_path: Path) -> None:
    with gnss_rig(broker.port, tmp_path, device_extra="silence_s = 0.5") as (pty, gw, col):
        doc = gw.wait_status(
            lambda d: d["devices"]["gnss0"]["silent"] >= 1 and d["devices"]["gnss0"]["opened"] >= 2
        )
        pty.write(epochs(1_790_000_000))
        col.wait_for(lambda ms: 1_790_000_001_000 in fixes_at(col), timeout=20)
    assert "silent" in states(col)
    assert doc["devices"]["gnss0"]["state"] in ("connected", "silent")


def test_garbage_and_fuzzy_cases_are_counted_not_fatal(
    broker: Mosquitto, tmp_path: Path, corpora: Path
) -> None:
    rng = random.Random(5)
    with gnss_rig(broker.port, tmp_path) as (pty, gw, col):
        fuzzy = (corpora / "gpsd/test/daemon/nmea-fuzzy-cases.log").read_bytes()
        noise = bytes(rng.randrange(256) for _ in range(64 * 1024))
        flipped = bytearray(fuzzy)
        for _ in range(200):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        pty.write_in_thread(noise + b"\r\n" + fuzzy + bytes(flipped) + b"\r\n").join(timeout=30)
        time.sleep(0.2)
        pty.write(epochs(1_790_000_000))
        col.wait_for(lambda ms: 1_790_000_001_000 in fixes_at(col), timeout=20)
        doc = gw.status()
    rejected = doc["devices"]["gnss0"]["rejected"]
    assert rejected.get("garbage", 0) > 0 and rejected.get("checksum", 0) > 0
    assert doc["devices"]["gnss0"]["opened"] == 1  # no restart was needed
    assert all(-90 <= r["d"]["lat"] <= 90 for m in col.up("gnss.fix") for r in m.payload["recs"])


def test_gpsd_json_over_tcp(broker: Mosquitto, tmp_path: Path) -> None:
    """A receiver shared through gpsd: the gateway sends WATCH and reads TPV reports."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    dev = f'[[devices]]\nid = "gpsd0"\nkind = "gnss"\nurl = "tcp://127.0.0.1:{port}"\nmin_interval_s = 0.0\n'
    gw = GatewayProc(tmp_path / "gw", port=broker.port, devices=dev)
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    try:
        server.settimeout(20)
        conn, _ = server.accept()
        conn.settimeout(10)
        assert b'?WATCH={"enable":true,"json":true}' in conn.recv(1024)
        conn.sendall(
            b'{"class":"VERSION","release":"3.25"}\n'
            b'{"class":"TPV","device":"/dev/ttyACM0","mode":3,"time":"2026-11-26T07:40:00.000Z",'
            b'"lat":21.918600,"lon":112.793600,"altMSL":12.5,"speed":1.4,"track":90.0}\n'
        )
        msgs = col.wait_for(lambda ms: any(m.payload["kind"] == "gnss.fix" for m in ms), timeout=15)
        conn.close()
    finally:
        gw.stop()
        col.stop()
        server.close()
    (fix,) = [r["d"] for m in msgs if m.payload["kind"] == "gnss.fix" for r in m.payload["recs"]]
    assert fix["lat"] == 21.9186 and fix["lon"] == 112.7936 and fix["alt"] == 12.5 and fix["fix"] == 3
