"""The gateway's receivers shared with local tools: gpsd's own client (`gpspipe`, from
Debian's gpsd-clients) reads the gpsd-compatible feed, and what is forwarded by UDP is
decoded with pyais and compared with what the receivers sent."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pyais
import pytest

from drivers.gnss.sim import epoch_sentences
from edge.feeds import NmeaForwarder
from tests.integration.test_maritime import ais_sentence
from tests.support.broker import Mosquitto, free_port
from tests.support.gateway import GatewayProc, gnss_device
from tests.support.pty import Pty

GPSPIPE = shutil.which("gpspipe")


def test_gpspipe_and_a_udp_listener_get_the_gateways_gnss_and_ais(broker: Mosquitto, tmp_path: Path) -> None:
    if GPSPIPE is None:
        pytest.fail(
            "gpspipe is not installed (Debian's gpsd-clients; scripts/setup installs it for the tests)"
        )
    gnss = Pty(tmp_path / "ttyGNSS")
    ais_port, gpsd_port = free_port(socket.SOCK_DGRAM), free_port()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    devices = (
        gnss_device(gnss.link)
        + f'[[devices]]\nid = "ais0"\nkind = "ais"\nurl = "udp://127.0.0.1:{ais_port}"\n'
    )
    web = (
        f'[web]\ngpsd = "127.0.0.1:{gpsd_port}"\nnmea_udp = ["127.0.0.1:{sink.getsockname()[1]}"]\n'
        "[ais]\nmin_interval_s = 0.0\n"
    )
    gw = GatewayProc(tmp_path / "gw", port=broker.port, devices=devices, extra=web)
    gw.start()
    try:
        gw.wait_device_open("gnss0")
        gw.wait_device_open("ais0")
        pipe = subprocess.Popen(
            [GPSPIPE, "-w", "-n", "12", f"127.0.0.1:{gpsd_port}"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.5)  # gpspipe's ?WATCH reaches the feed
        sent_gnss = b"".join(epoch_sentences(time.time() + i, 21.9, 112.8) for i in range(3))
        sent_ais = [
            ais_sentence(mmsi=412000000 + i, lat=21.5, lon=112.5, speed=3.0, status=0) for i in range(3)
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for line in sent_ais:  # 3 AIS objects, then 3 epochs: a TPV and a SKY each
                tx.sendto(line, ("127.0.0.1", ais_port))
                time.sleep(0.1)
        gnss.write(sent_gnss)
        out, _ = pipe.communicate(timeout=30)
        forwarded: list[bytes] = []
        try:
            while True:
                forwarded.append(sink.recv(2048))
        except TimeoutError:
            pass
        status = gw.status()
    finally:
        gw.stop()
        sink.close()
    objs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    classes = [o["class"] for o in objs]
    assert classes[:3] == ["VERSION", "DEVICES", "WATCH"], classes
    tpv = next(o for o in objs if o["class"] == "TPV")
    assert tpv["device"] == "gnss0" and tpv["mode"] == 3 and abs(tpv["lat"] - 21.9) < 1e-4
    assert "SKY" in classes
    ais = [o for o in objs if o["class"] == "AIS"]
    assert ais and ais[0]["mmsi"] in {412000000, 412000001, 412000002} and abs(ais[0]["lat"] - 21.5) < 1e-4
    # forwarded by UDP: each sentence as heard, checksum intact
    assert all(d.endswith(b"\r\n") and d.count(b"\n") == 1 for d in forwarded)
    ais_out = [d for d in forwarded if d.startswith(b"!AIVDM")]
    assert ais_out == sent_ais
    assert {pyais.decode(d.strip()).asdict()["mmsi"] for d in ais_out} == {412000000, 412000001, 412000002}
    gnss_out = {d for d in forwarded if d.startswith(b"$")}
    assert gnss_out and gnss_out <= set(sent_gnss.splitlines(True))
    assert status["feeds"]["nmea_udp"]["forwarded"] == len(forwarded)


def test_ais_only_forwarding_and_corrupt_sentences_stay_home() -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(0.5)
    fwd = NmeaForwarder((f"127.0.0.1:{sink.getsockname()[1]}",), ais_only=True)
    good = ais_sentence(mmsi=412000009, lat=21.5, lon=112.5)
    corrupt = good.replace(b",A,", b",B,")  # the checksum no longer matches
    fwd.tap("ais0", epoch_sentences(time.time(), 21.9, 112.8) + corrupt + good[:10])
    fwd.tap("ais0", good[10:])  # a sentence split across reads is put back together
    got = []
    try:
        while True:
            got.append(sink.recv(2048))
    except TimeoutError:
        pass
    fwd.close()
    sink.close()
    assert got == [good]
