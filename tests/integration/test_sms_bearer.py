"""The second bearer: an SOS pressed while the broker is down also goes out as SMS,
through a simulated modem on a pty that answers as a real one; every PDU the gateway
writes is read with an independent decoder (smspdudecoder), the SMS are verified by
`gridedge verify --sms` as a platform's SMS gateway would hand them over, and the MQTT
copy that arrives later is the same message."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from smspdudecoder.fields import SMSSubmit

from drivers.modem.sim import PtyModem, SimModem
from floor.envelope import keyring, load_public_key
from tests.integration.test_wearables import Rig, wait_rec
from tests.support.broker import Mosquitto
from tests.support.wearables import button
from tools.verify import Tally

NUMBERS = ("+8613800138000", "+8613900139000")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def modem() -> Iterator[tuple[SimModem, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    sim = SimModem()
    server = PtyModem(master, sim).start()
    yield sim, os.ttyname(slave)
    server.stop()
    os.close(master)
    os.close(slave)


def sms_of(sim: SimModem, number: str) -> list[str]:
    """Each SMS to `number` as an SMS gateway hands it over: its user data, hex."""
    out = []
    for pdu in sim.pdus:
        d = SMSSubmit.decode(io.StringIO(pdu))
        if "+" + d["recipient"]["number"] != number:
            continue
        assert d["dcs"]["encoding"] == "binary" and d["header"]["mti"] == "submit"
        head = d["user_data"]["header"]
        udh = b""
        if head is not None:
            (ie,) = head["elements"]
            c = ie["data"]
            ref = c["reference"]
            assert ie["iei"] == 8  # a 16-bit reference: a fleet's gateways rarely collide
            udh = bytes([6, 8, 4, ref >> 8, ref & 0xFF, c["parts_count"], c["part_number"]])
        out.append((udh + d["user_data"]["data"]).hex())
    return out


def verify_sms(pub: Path, lines: list[str]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "verify", "--pubkey", str(pub), "--sms", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(x) for x in proc.stdout.splitlines()]


def test_an_sos_goes_by_sms_while_the_broker_is_down_and_the_mqtt_copy_is_the_same(
    broker: Mosquitto, tmp_path: Path, modem: tuple[SimModem, str]
) -> None:
    sim, tty_path = modem
    sms = (
        f'[sms]\nport = "{tty_path}"\nnumbers = {json.dumps(list(NUMBERS))}\n'
        "after_s = 1.0\nmax_parts_per_hour = 8\ntimeout_s = 5\n[alarms]\nfailover_s = 1.0\n"
    )
    r = Rig(broker, tmp_path, [button("btn-1", 1, "w-7")], extra=sms)
    r.gw.start()
    try:
        r.gw.wait_status(lambda d: d["link"]["state"] == "up" and d["bearers"]["sms"]["state"] == "ready")
        r.connected("btn-1")
        counter0, _ = r.press("btn-1")  # the uplink is up: MQTT only
        wait_rec(r.col, "sos.alarm", lambda d: d["counter"] == counter0)
        broker.kill(signal.SIGTERM)  # the broker goes down
        r.gw.wait_status(lambda d: d["link"]["state"] != "up")
        pressed = time.monotonic()
        counter, _ = r.press("btn-1")  # committed and answered: the button shows "received"
        deadline = time.monotonic() + 20
        while len(sim.pdus) < 4 and time.monotonic() < deadline:  # 2 parts to each of 2 numbers
            time.sleep(0.01)
        to_cmgs = time.monotonic() - pressed
        print(f"press to the last +CMGS: {to_cmgs * 1000:.0f} ms (after_s 1.0 of uplink down first)")
        assert len(sim.pdus) == 4, sim.pdus
        doc = r.gw.wait_status(lambda d: d["bearers"]["sms"]["sent"] == 1)
        assert doc["bearers"]["sms"]["units"] == 4 and doc["bearers"]["sms"]["rssi_dbm"] == -71
        for number in NUMBERS:
            (line, summary) = verify_sms(r.gw.pub, sms_of(sim, number))
            assert line["ok"] and line["bearer"] == "sms" and line["kind"] == "sos.alarm"
            (rec,) = line["recs"]
            assert rec["d"]["counter"] == counter and rec["d"]["worker"] == "w-7"
            assert summary["valid"] == 1 and summary["invalid"] == 0
        # with the uplink down for a while, a press reaches the modem at once
        pressed = time.monotonic()
        r.press("btn-1")
        while len(sim.pdus) < 8 and time.monotonic() < deadline + 20:
            time.sleep(0.005)
        print(f"press to the last +CMGS, uplink already down: {(time.monotonic() - pressed) * 1000:.0f} ms")
        # a new alarm never waits for the hour to turn: past the hourly 8 parts, it goes, counted
        r.press("btn-1")
        r.gw.wait_status(lambda d: d["bearers"]["sms"]["over_budget"] >= 1)
        assert len(sim.pdus) == 12
        broker.start()  # the broker is back: the MQTT copy arrives, and is the same message
        mqtt = wait_rec(r.col, "sos.alarm", lambda d: d["counter"] == counter, timeout=30)
        assert mqtt["counter"] == counter
    finally:
        r.stop()
    (msg,) = [m for m in r.col.up("sos.alarm") if m.payload["recs"][0]["d"]["counter"] == counter]
    keys = keyring(load_public_key(r.gw.pub.read_bytes()))
    tally = Tally()
    from drivers.modem.pdu import reassemble

    sms_copy = reassemble([bytes.fromhex(x) for x in sms_of(sim, NUMBERS[0])[:2]])  # the first alarm's
    first = tally.add_compact(sms_copy, keys)
    later = tally.add(msg.topic, msg.raw, keys)
    assert first["seq"] == later["seq"] == msg.payload["seq"] and later["duplicate"]
    assert first["recs"] == later["recs"]
