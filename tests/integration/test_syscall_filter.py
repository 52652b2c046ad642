"""The shipped unit's system call filter, held against the gateway that runs under it.

The gateway runs under exactly the allow-list `systemd/gridedge.service` builds (its
groups expanded by this machine's `systemd-analyze`), with every device kind the suite
has: GNSS on a pty, AIS on UDP and on TCP, DSC on a pty, an SOS button through bleak's
BlueZ backend (BlueZoo), signed commands and TLS to the broker. Any call outside the list
kills it with SIGSYS, as it would under systemd, so a library upgrade that makes a new
system call fails here.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from drivers.gnss.sim import epoch_sentences, sentence
from drivers.modem.sim import PtyModem, SimModem
from tests.support.bluezoo import BluezButton, BlueZoo
from tests.support.broker import Mosquitto, free_port
from tests.support.collector import Collector
from tests.support.gateway import REPO, GatewayProc
from tests.support.pki import CA
from tests.support.platform import Platform
from tests.support.pty import Pty
from tests.support.seccomp import allowed, group

UNIT = REPO / "systemd" / "gridedge.service"
FILTER = (sys.executable, "-m", "tests.support.seccomp", str(UNIT), "--")
DSC_DISTRESS = sentence("CDDSC,12,4124401040,12,05,00,0215211248,0610,,,S,")


def test_the_runner_builds_the_list_systemd_would() -> None:
    calls = allowed(UNIT)
    assert "read" in calls and "epoll_wait" in calls and "sendmsg" in calls
    assert not calls & group("@privileged"), "the unit denies @privileged"
    assert "setrlimit" not in calls and "clock_adjtime" not in calls and "adjtimex" not in calls


def test_a_call_outside_the_list_is_fatal() -> None:
    """Positive control: the runner really kills on a call the unit does not allow."""
    code = "import ctypes; ctypes.CDLL(None).adjtimex(ctypes.create_string_buffer(512)); print('survived')"
    res = subprocess.run([*FILTER, sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == -signal.SIGSYS and "survived" not in res.stdout


def tls_broker(tmp_path: Path) -> tuple[CA, Mosquitto, int]:
    """A broker with a TLS listener (its CA, itself, the TLS port) beside its plain one."""
    ca = CA(tmp_path / "pki")
    broker_cert, broker_key = ca.issue("broker", server=True)
    broker = Mosquitto(
        tmp_path / "broker",
        extra=(
            f"listener {(tls_port := free_port())} 127.0.0.1\ncafile {ca.cert_path}\n"
            f"certfile {broker_cert}\nkeyfile {broker_key}\nrequire_certificate false\n"
        ),
    )
    broker.start()
    return ca, broker, tls_port


def served(web_port: int, gpsd_port: int) -> None:
    """The page, /metrics and the gpsd feed answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=10) as resp:
        assert b"gridedge_uplink_up 1.0" in resp.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10) as resp:
        assert b"gridedge" in resp.read()
    with socket.create_connection(("127.0.0.1", gpsd_port), timeout=10) as feed:
        feed.sendall(b'?WATCH={"enable":true,"json":true};')
        assert b'"class":"VERSION"' in feed.recv(4096)


@pytest.mark.slow
def test_the_gateway_runs_every_device_kind_under_the_units_filter(zoo: BlueZoo, tmp_path: Path) -> None:
    ca, broker, tls_port = tls_broker(tmp_path)
    button = BluezButton(zoo, "hci1", key="5ec0ffee5ec0ffee5ec0ffee5ec0ffee")
    gnss, dsc, modem_pty = Pty(tmp_path / "ttyGNSS"), Pty(tmp_path / "ttyDSC"), Pty(tmp_path / "ttyModem")
    modem = PtyModem(modem_pty.master, SimModem()).start()
    udp_port, web_port, gpsd_port = free_port(), free_port(), free_port()
    aggregator = socket.create_server(("127.0.0.1", 0))
    platform = Platform(tmp_path / "platform", broker.port)
    devices = (
        f'[[devices]]\nid = "gnss0"\nkind = "gnss"\nport = "{gnss.link}"\nbaudrate = 115200\n'
        f'[[devices]]\nid = "vhf"\nkind = "dsc"\nport = "{dsc.link}"\n'
        f'[[devices]]\nid = "ais-udp"\nkind = "ais"\nurl = "udp://127.0.0.1:{udp_port}"\n'
        f'[[devices]]\nid = "ais-tcp"\nkind = "ais"\nurl = "tcp://127.0.0.1:{aggregator.getsockname()[1]}"\n'
        f'[[devices]]\nid = "sos-bz"\nkind = "sos_button"\nworker = "w-9"\n'
        f'address = "{zoo.adapter_address(1)}"\nkey = "{button.key}"\n'
    )
    gw = GatewayProc(
        tmp_path / "gw",
        port=tls_port,
        mqtt_extra=f'tls_ca = "{ca.cert_path}"\nreconnect_min_s = 0.05\nreconnect_max_s = 0.5',
        devices=devices,
        gateway_extra='groups = ["taishan"]',
        extra=(
            "[ais]\nmin_interval_s = 0.0\ndedup_window_s = 0.0\n"
            f'[trust]\ncommand_key = "{platform.pub_path}"\n'
            '[ble]\nprobe_s = 2.0\n[ble.options]\nadapter = "hci0"\n'
            f'[sms]\nport = "{modem_pty.link}"\nnumbers = ["+8613800138000"]\nafter_s = 0.5\n'
            f'[web]\nlisten = "127.0.0.1:{web_port}"\ngpsd = "127.0.0.1:{gpsd_port}"\n'
            f'nmea_udp = ["127.0.0.1:{free_port(socket.SOCK_DGRAM)}"]\n'
        ),
        env={"DBUS_SYSTEM_BUS_ADDRESS": zoo.address},
        launcher=FILTER,
    )
    check = subprocess.run(
        [*FILTER, sys.executable, "-m", "tools.cli", "check", "-c", str(gw.config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"DBUS_SYSTEM_BUS_ADDRESS": zoo.address, "PATH": "/usr/bin:/bin"},
    )
    assert check.returncode == 0, check.stderr  # ExecStartPre runs under the same filter
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    peer: socket.socket | None = None
    try:
        gw.wait_status(lambda d: d["link"]["state"] == "up", 30)
        peer, _ = aggregator.accept()
        gnss.write(epoch_sentences(time.time(), 22.2, 112.8))
        dsc.write(DSC_DISTRESS)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"!AIVDM,1,1,,A,13HOI:0P0000VOHLCnHQKwvL05Ip,0*23\r\n", ("127.0.0.1", udp_port))
        peer.sendall(b"!AIVDM,1,1,,B,15MwkT1P37G?fl0EJbR0OwT0@MS,0*4E\r\n")
        gw.wait_status(
            lambda d: (d["ble"] or {}).get("wearables", {}).get("sos-bz", {}).get("state") == "connected", 40
        )
        counter = button.press()
        assert button.wait_feedback(counter) == "received"
        _, data = platform.command("gw-test-1", "diag.snapshot")
        platform.send("gw-test-1", data)
        col.wait_for(
            lambda ms: (
                {"sos.alarm", "dsc.distress", "ais.position", "gnss.fix", "cmd.result"}
                <= {m.payload["kind"] for m in ms}
            ),
            timeout=30,
        )
        # the status page, /metrics and the gpsd feed, served under the filter too
        served(web_port, gpsd_port)
        # the uplink fails: the next alarm goes by SMS through the modem, under the filter too
        gw.wait_status(lambda d: d["bearers"]["sms"]["state"] == "ready")
        broker.stop()
        gw.wait_status(lambda d: d["link"]["state"] != "up")
        counter = button.press()
        assert button.wait_feedback(counter) == "received"
        gw.wait_status(lambda d: d["bearers"]["sms"]["sent"] >= 1)
        assert modem.modem.pdus
        gw.check_alive()
    finally:
        modem.stop()
        rc = gw.stop()
        col.stop()
        button.stop()
        platform.stop()
        aggregator.close()
        if peer is not None:
            peer.close()
        broker.stop()
    assert rc == 0, f"gateway ended with {rc} (-{int(signal.SIGSYS)} is a call outside the filter)"
    assert not col.invalid
