"""Threat: anyone who can open sockets to the gateway's listeners. What was seen: 1,100
half-sent HTTP requests to the status page used every descriptor; the gateway lived on
deaf (no MQTT, no status socket, no receivers), an SOS pressed then was never stored,
and SIGTERM did not stop it. Here the gateway runs with 512 descriptors, and the page,
the gpsd feed and the status socket are stormed at once (bounded, on loopback): it keeps
publishing, an SOS pressed during the storm is stored and sent, its listeners serve
again once the storm is over, it logs a bounded amount, and SIGTERM ends it."""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_wearables import GW, wait_rec
from tests.support.broker import Mosquitto, free_port
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc
from tests.support.wearables import SimProc, button, devices_toml

GATEWAY_FDS = 512
STORM = {"page": 1100, "gpsd": 300, "status": 300}


@pytest.fixture(autouse=True)
def enough_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = sum(STORM.values()) + 512
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.fail(f"the test needs {need} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def half_sent_http(port: int) -> socket.socket | None:
    s = socket.socket()
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        s.connect(("127.0.0.1", port))
    try:
        time.sleep(0)
        s.setblocking(True)
        s.settimeout(1.0)
        s.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    except OSError:
        s.close()
        return None
    return s


def idle(connect: tuple[int, str | tuple[str, int]]) -> socket.socket | None:
    family, addr = connect
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(addr)
    except OSError:
        s.close()
        return None
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # and never read
    return s


def closed(s: socket.socket) -> bool:
    """The gateway's end is gone (a FIN or a reset)."""
    s.settimeout(0.2)
    try:
        return s.recv(1) == b""
    except ConnectionError:
        return True
    except OSError:
        return False


def http_get(port: int, path: str = "/api/status") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(64)
    return int(head.split()[1])


def gpsd_version(port: int) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        line = s.makefile("rb").readline()
    return dict(json.loads(line))


@pytest.mark.slow
def test_a_storm_on_every_listener_leaves_the_gateway_working(broker: Mosquitto, tmp_path: Path) -> None:
    web, gpsd = free_port(), free_port()
    buttons = [button("btn-1", 1, "w-1")]
    sim = SimProc(tmp_path / "sim", buttons)
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        gw_id=GW,
        devices=devices_toml(buttons),
        extra=sim.ble_config() + f'[web]\nlisten = "127.0.0.1:{web}"\ngpsd = "127.0.0.1:{gpsd}"\n',
        launcher=("prlimit", f"--nofile={GATEWAY_FDS}:{GATEWAY_FDS}", "--"),
    )
    col = Collector(broker.port, gw.pub).start()
    held: list[socket.socket] = []
    try:
        gw.start()
        gw.wait_status(lambda d: d["link"]["state"] == "up", 30)
        assert sim.call("connected", device="btn-1", timeout=30)["connected"]
        # the storm: half-sent requests, idle gpsd clients, status clients that never read
        held += [s for _ in range(STORM["page"]) if (s := half_sent_http(web)) is not None]
        held += [
            s for _ in range(STORM["gpsd"]) if (s := idle((socket.AF_INET, ("127.0.0.1", gpsd)))) is not None
        ]
        status = str(gw.state / "gridedge.sock")
        held += [s for _ in range(STORM["status"]) if (s := idle((socket.AF_UNIX, status))) is not None]
        # during it: a real gpsd client (chrony, a plotter) still gets in, in place of an idle one
        assert gpsd_version(gpsd)["class"] == "VERSION"
        # and an SOS is stored (the button hears so) and sent
        counter = sim.call("press", device="btn-1", type="long")["counter"]
        answered = sim.call("wait", device="btn-1", counter=counter, timeout=15)["answered_ms"]
        assert answered is not None
        wait_rec(col, "sos.alarm", lambda d: d.get("counter") == counter, timeout=20)
        gw.check_alive()
        # the status socket answers too, and the alarm lane drains; what was turned away is counted
        doc = gw.wait_status(
            lambda d: d["link"]["state"] == "up" and not d["outbox"]["lanes"]["0"]["rows"], 30
        )
        assert doc["listeners"]["web"]["refused"] > 1000 and doc["feeds"]["gpsd"]["idle_closed"] >= 1
        # half-sent requests do not outlive the header deadline
        time.sleep(11)
        assert sum(closed(s) for s in held[:50]) == 50  # admitted and timed out, or refused at once
    finally:
        for s in held:
            s.close()
    try:
        # the storm is over: every listener serves again
        time.sleep(1)
        assert http_get(web) == 200
        assert gpsd_version(gpsd)["class"] == "VERSION"
        assert gw.wait_status(lambda d: d["link"]["state"] == "up", 10)
        assert gw.log.stat().st_size < 1_000_000, "the log is flooded"
        assert gw.proc is not None
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        gw.proc.wait(timeout=20)
        assert time.monotonic() - started < 20
    finally:
        gw.kill()
        sim.stop()
        col.stop()
