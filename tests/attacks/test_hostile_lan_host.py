"""Threat: a host on the station's LAN (or a transmitter in radio range) sending AIS or
DSC distress reports. It may not raise alarms without limit: a
beacon or a ship's distress is one incident, each source has a budget of new incidents,
a UDP listener takes datagrams only from its `allow` list, nothing it sends holds
unbounded memory, and another source's alarm goes up at once whatever it does."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyais

from drivers.ais.parse import AisReport
from drivers.ais.tracker import VesselTracker
from drivers.incidents import MAX_INCIDENTS, NEW_BURST, NEW_EVERY_MS, IncidentShaper
from edge.outbox import Outbox, OutboxFull, Pending
from edge.outbox.model import HELD, MAX_HELD, Limits
from floor.config import AisConfig
from floor.kinds import Prio
from tests.support.broker import Mosquitto, free_port
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc
from tests.support.pty import Pty
from tests.support.smallfs import fill_disk


def sart(mmsi: int, i: int, *, lat: float = 21.86) -> bytes:
    """An AIS-SART position report, varied by `i` (never byte-identical: no dedup helps)."""
    (s,) = pyais.encode_dict(
        {
            "type": 1,
            "mmsi": mmsi,
            "lat": lat + i * 1e-5,
            "lon": 112.80,
            "status": 14,
            "speed": 0.1 * (i % 50),
        },
        radio_channel="A",
        talker_id="AI",
        sentence_type="VDM",
    )
    return s.encode() + b"\r\n"


def rep(tb: int, mmsi: int, i: int = 0) -> AisReport:
    data = {"lat": 21.86 + i * 1e-5, "lon": 112.8, "nav_status": 14}
    return AisReport(tb, 1, mmsi, "A", data, f"{mmsi}-{tb}-{i}")


def test_two_thousand_varied_reports_of_one_beacon_are_one_incident() -> None:
    t = VesselTracker(AisConfig())
    out = []
    for i in range(2000):  # 2 s of a hostile transmitter: every report differs a little
        out += t.offer(rep(i, 970000001, i), "udp")
    assert [k for k, _ in out] == ["ais.distress"]
    later = t.due("udp", 10_000)  # it kept moving: the latest report goes up, with the count
    assert len(later) == 1 and later[0][1]["folded"] == 1998


def test_a_source_inventing_beacons_is_bounded_and_another_source_is_not_delayed() -> None:
    t = VesselTracker(AisConfig())
    flood = []
    for i in range(5000):  # a new MMSI in every report
        flood += t.offer(rep(i, 970100000 + i), "udp")
    assert len(flood) == NEW_BURST  # the first few at once; the rest wait for the budget
    # a real SART heard by the station's own receiver, in the middle of the flood
    assert [k for k, _ in t.offer(rep(5001, 970999999), "serial")] == ["ais.distress"]
    # the flood's held-back incidents trickle out at the source's rate, never all at once
    assert len(t.due("udp", 5000 + 3 * NEW_EVERY_MS)) == 3
    assert len(t.due("udp", 5000 + 100 * NEW_EVERY_MS)) == NEW_BURST  # a budget, not a debt
    assert t.beacons.snapshot()["incidents"] <= MAX_INCIDENTS  # memory bounded
    assert t.beacons.snapshot()["evicted"] > 0  # and the overflow counted, not silent


def test_a_flipping_state_is_bounded_by_the_incident_gap() -> None:
    shaper = IncidentShaper(repeat_s=60.0, move_m=50.0)
    up = []
    for i in range(10_000):  # 10 s of alternating distress / test from one MMSI
        kind = "ais.distress" if i % 2 else "ais.beacon_test"
        up += shaper.offer(1, "udp", kind, {"i": i}, state=kind, now=i)
    up += shaper.due("udp", 10_000)
    assert len(up) <= 3  # the first, then one per 5 s gap
    assert sum(1 + r.get("folded", 0) for _, r in up) <= 10_000


def test_held_alarms_are_bounded_and_a_flooding_source_gives_up_its_own(small_disk: Path) -> None:
    """The disk is full and its reserve gone: alarms are held in memory, at most MAX_HELD,
    and past that the source holding the most loses its newest, not a wearable's SOS."""
    filler = small_disk / "runaway.log"

    def alarm(src: str) -> Pending:
        return Pending(
            Prio.LIFE_SAFETY, "ais.distress", src, 0, lambda seq: seq.to_bytes(8, "big") + b"x" * 400
        )

    futures: list[asyncio.Future[int]] = []

    async def go() -> tuple[list[BaseException | None], list[bool]]:
        async with Outbox(small_disk / "outbox.sqlite", limits=Limits(max_bytes=16 * 1024 * 1024)) as ob:
            ob.reserve.file.unlink()  # no reserve left
            fill_disk(filler)
            flood = [ob.submit(alarm("ais-udp")) for _ in range(MAX_HELD + 500)]
            sos = [
                ob.submit(Pending(Prio.LIFE_SAFETY, "sos.alarm", "sos-w042", 0, lambda s: b"s" * 200))
                for _ in range(3)
            ]
            futures.extend(flood + sos)
            await ob.flush()
            assert ob.degraded == HELD
            refused = [f.exception() if f.done() else None for f in flood]
            return refused, [f.done() for f in sos]

    refused, sos_done = asyncio.run(go())
    for f in futures:  # the held ones were failed at close: the disk never had room
        assert isinstance(f.exception(), OutboxFull)
    assert sum(isinstance(e, OutboxFull) for e in refused) == 503  # the flood gave up its newest
    assert not any(sos_done)  # every SOS is still held, to be stored when there is room


def test_a_udp_listener_takes_only_its_allowed_senders(broker: Mosquitto, tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    dev = (
        f'[[devices]]\nid = "ais-udp"\nkind = "ais"\nurl = "udp://127.0.0.1:{port}"\nallow = ["127.0.0.1"]\n'
    )
    gw = GatewayProc(tmp_path / "gw", port=broker.port, devices=dev)
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    try:
        gw.wait_device_open("ais-udp")
        for sender, mmsi in (("127.0.0.2", 970000002), ("127.0.0.1", 970000001)):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                tx.bind((sender, 0))  # another host on the LAN, as far as the listener can tell
                tx.sendto(sart(mmsi, 0), ("127.0.0.1", port))
        col.wait_for(lambda ms: any(m.payload["kind"] == "ais.distress" for m in ms), timeout=15)
        doc = gw.wait_status(lambda d: d["devices"]["ais-udp"]["rejected"].get("source", 0) >= 1)
    finally:
        gw.stop()
        col.stop()
    assert {r["d"]["mmsi"] for m in col.up("ais.distress") for r in m.payload["recs"]} == {970000001}
    assert doc["devices"]["ais-udp"]["rejected"]["source"] == 1
    assert "not in its allow list" in gw.log.read_text()


def test_a_udp_flood_raises_one_incident_and_the_serial_receiver_is_not_delayed(
    broker: Mosquitto, tmp_path: Path
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    pty = Pty(tmp_path / "ttyAIS")
    devs = (
        f'[[devices]]\nid = "ais-udp"\nkind = "ais"\nurl = "udp://127.0.0.1:{port}"\n'
        f'[[devices]]\nid = "ais-serial"\nkind = "ais"\nport = "{pty.link}"\n'
    )
    gw = GatewayProc(tmp_path / "gw", port=broker.port, devices=devs)
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    try:
        gw.wait_device_open("ais-udp")
        gw.wait_device_open("ais-serial")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i in range(2000):  # one MMSI, every report different, as fast as it goes
                tx.sendto(sart(970000001, i), ("127.0.0.1", port))
            time.sleep(0.2)
            # what the kernel dropped (its buffer full) is told with the next datagram read
            tx.sendto(b"probe\r\n", ("127.0.0.1", port))
        pty.write(sart(970777777, 0))  # a real SART heard by the station's own receiver
        col.wait_for(
            lambda ms: any(
                r["d"]["mmsi"] == 970777777 for m in col.up("ais.distress") for r in m.payload["recs"]
            ),
            15,
        )
        doc = gw.wait_status(
            lambda d: (
                d["devices"]["ais-udp"]["events"] + d["devices"]["ais-udp"]["rejected"].get("flood", 0)
                >= 2000
            )
        )
    finally:
        gw.stop()
        col.stop()
        pty.unplug()
    flood = [m for m in col.up("ais.distress") if m.payload["recs"][0]["d"]["mmsi"] == 970000001]
    assert 0 < len(flood) <= 3, len(flood)  # one incident, not 2,000 alarms
    assert doc["ais"]["beacons"]["incidents"] == 2


def test_check_warns_on_a_wildcard_listener_without_an_allow_list(tmp_path: Path) -> None:
    gw = GatewayProc(
        tmp_path / "gw",
        port=1883,
        devices='[[devices]]\nid = "ais-lan"\nkind = "ais"\nurl = "udp://0.0.0.0:10110"\n',
    )
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "check", "-c", str(gw.config)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr  # a warning, not a refusal: it is the technician's call
    assert "warning: devices[ais-lan]: udp://0.0.0.0:10110 takes datagrams from anyone" in res.stderr
    fixed = gw.config.read_text().replace(
        'url = "udp://0.0.0.0:10110"', 'url = "udp://0.0.0.0:10110"\nallow = ["192.168.4.0/24"]'
    )
    gw.config.write_text(fixed)
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "check", "-c", str(gw.config)], capture_output=True, text=True
    )
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
