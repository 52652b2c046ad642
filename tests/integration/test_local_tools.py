"""The gateway's receivers shared with local tools: gpsd's own clients (`gpspipe`,
`cgps` and the `gps` Python module, from Debian's gpsd-clients and python3-gps) read the
gpsd-compatible feed, its sky is gpsd's on real captures, and what is forwarded by UDP is
decoded with pyais and compared with what the receivers sent."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pyais
import pyte
import pytest

from drivers.gnss.sim import epoch_sentences, sky_sentences
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


class Receiver:
    """A GNSS receiver on a pty sending an epoch and its sky every 0.2 s, until stopped."""

    def __init__(self, pty: Pty) -> None:
        self.pty = pty
        self.sent: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            data = epoch_sentences(time.time(), 21.9, 112.8) + sky_sentences()
            self.sent.update(data.splitlines())
            self.pty.write(data)
            time.sleep(0.2)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


GPS_MODULE_CLIENT = """
import json, sys
import gps
session = gps.gps(host="127.0.0.1", port=sys.argv[1], mode=gps.WATCH_ENABLE | gps.WATCH_JSON)
seen = {}
for report in session:
    if report["class"] in ("TPV", "SKY") and report["class"] not in seen:
        seen[report["class"]] = report
    if len(seen) == 2:
        break
print(json.dumps({"lat": seen["TPV"]["lat"], "satellites": len(seen["SKY"]["satellites"])}))
"""


def test_gpsd_s_own_clients_read_the_feed_as_they_read_gpsd(broker: Mosquitto, tmp_path: Path) -> None:
    """gpsd's clients as a technician runs them: `gpspipe -w` gets SKY with the satellites
    in view and used and the DOPs, `gpspipe -r` the sentences as the receiver sent them,
    the `gps` Python module (which ends its requests with a newline, not `;`) its TPV and
    SKY, and `cgps` on a terminal shows the satellites seen and used."""
    for tool in ("gpspipe", "cgps", "script"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/setup installs gpsd-clients and util-linux)")
    gnss, port, page = Pty(tmp_path / "ttyGNSS"), free_port(), free_port()
    web = f'[web]\ngpsd = "127.0.0.1:{port}"\nlisten = "127.0.0.1:{page}"\n'
    gw = GatewayProc(tmp_path / "gw", port=broker.port, devices=gnss_device(gnss.link), extra=web)
    gw.start()
    try:
        gw.wait_device_open("gnss0")
        with Receiver(gnss) as receiver:
            time.sleep(1.0)
            json_out = subprocess.run(
                ["gpspipe", "-w", "-n", "14", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30
            ).stdout
            raw_out = subprocess.run(
                ["gpspipe", "-r", "-n", "20", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30
            ).stdout
            module = subprocess.run(
                ["/usr/bin/python3", "-c", GPS_MODULE_CLIENT, str(port)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            screen = subprocess.run(
                ["timeout", "4", "script", "-qfec", f"cgps 127.0.0.1:{port}", "/dev/null"],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "TERM": "xterm", "COLUMNS": "100", "LINES": "40"},
            ).stdout
            with socket.create_connection(("127.0.0.1", port), timeout=5) as poll:
                poll.sendall(b"?POLL\n")
                answer = b""
                while b'"class":"POLL"' not in answer or not answer.endswith(b"\n"):
                    answer += poll.recv(65536)
            sent = receiver.sent
            raw = raw_view(page, gnss)
    finally:
        gw.stop()
    assert "stopping: SIGTERM" in gw.log.read_text()  # the journal says why the gateway went
    sky = next(json.loads(x) for x in json_out.splitlines() if '"class":"SKY"' in x and "satellites" in x)
    assert (sky["nSat"], sky["uSat"], sky["pdop"], sky["vdop"]) == (11, 6, 1.5, 1.2)
    prns = {s["PRN"]: s for s in sky["satellites"]}
    assert set(prns) == {1, 2, 3, 4, 5, 6, 9, 70, 71, 407, 410}  # gpsd's numbering: GLONASS 65-, BeiDou 401-
    assert prns[407]["gnssid"] == 3 and (prns[407]["el"], prns[407]["az"], prns[407]["ss"]) == (
        55.0,
        100.0,
        42.0,
    )
    assert prns[1]["used"] and not prns[9]["used"] and "ss" not in prns[9]  # no signal: no SNR
    lines = [x.encode() for x in raw_out.splitlines() if x.startswith("$")]
    assert len(lines) >= 10 and set(lines) <= sent  # the sentences as the receiver sent them, no JSON
    reports = [
        x
        for x in raw_out.splitlines()
        if x.startswith("{") and json.loads(x)["class"] in ("TPV", "SKY", "AIS")
    ]
    assert not reports  # as from gpsd: its answers (VERSION, DEVICES, WATCH), then sentences, no JSON reports
    assert module.returncode == 0, module.stderr
    assert json.loads(module.stdout) == {"lat": pytest.approx(21.9, abs=1e-4), "satellites": 11}
    term = pyte.Screen(100, 40)  # cgps draws with curses: read its screen as a terminal shows it
    pyte.Stream(term).feed(screen)
    text = "\n".join(term.display)
    # its satellite list: each one seen, with elevation, azimuth, signal and whether it is used
    sats = re.findall(r"(GP|GL|GA|BD|GB|QZ|SB)\s+\d+\s+(\d+)\s+[-\d.]+\s+[-\d.]+\s+[-\d.na/]+\s+([YN])", text)
    assert len(sats) == 11 and sum(used == "Y" for _c, _n, used in sats) == 6, text
    assert ("GP", "1", "Y") in sats and ("GP", "9", "N") in sats, sats
    poll_obj = next(json.loads(x) for x in answer.splitlines() if b'"class":"POLL"' in x)
    assert poll_obj["sky"][0]["nSat"] == 11 and poll_obj["tpv"][0]["device"] == "gnss0"
    marked = [x for x in raw if x.get("rejected")]
    assert marked and marked[-1]["rejected"] == "checksum" and str(marked[-1]["line"]).startswith("$GNGGA")
    assert any(str(x["line"]).startswith("$GPGSV") and "rejected" not in x for x in raw), raw[-12:]


def raw_view(page: int, gnss: Pty) -> list[dict[str, object]]:
    """The page's raw view of the receiver: on from the first look, then a corrupted
    sentence among good ones, marked."""
    url = f"http://127.0.0.1:{page}/raw/gnss0?format=json"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
    good = epoch_sentences(time.time(), 21.9, 112.8)
    gga = next(x for x in good.splitlines() if x.startswith(b"$GNGGA"))
    broken = gga[:-2] + (b"11" if gga.endswith(b"00") else b"00")  # its checksum no longer matches
    gnss.write(broken + b"\r\n")
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(url, timeout=10) as resp:
            lines: list[dict[str, object]] = json.loads(resp.read())["lines"]
        if (any(x.get("rejected") for x in lines) and len(lines) >= 20) or time.monotonic() > deadline:
            return lines
        time.sleep(0.3)
