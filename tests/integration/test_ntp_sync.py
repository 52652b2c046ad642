"""A clock synchronised by chrony or ntpd (not systemd-timesyncd, whose flag file is the
only sign the gateway read before): the gateway asks systemd-timedated over the system
bus (here a simulated timedated on a private bus, as BlueZoo stands in for BlueZ), trusts
its clock as `ntp` from the start, anchors the epoch, and refuses an expired command;
with timedated saying not synchronised, the clock stays `persisted`."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from floor.clock import TIMESYNC_FLAG
from tests.integration.test_commands import wait_result
from tests.support.bluezoo import BUS_CONF, dbus_daemon
from tests.support.broker import Mosquitto
from tests.support.collector import Collector
from tests.support.gateway import REPO, GatewayProc
from tests.support.platform import Platform

GW = "gw-ntp-1"


@contextlib.contextmanager
def timedated(workdir: Path, *, synced: bool) -> Iterator[str]:
    binary = dbus_daemon()
    if binary is None:
        pytest.fail("dbus-daemon is not installed; scripts/setup installs it")
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "system_bus"
    (workdir / "bus.conf").write_text(BUS_CONF.format(socket=sock))
    address = f"unix:path={sock}"
    bus = subprocess.Popen(
        [binary, "--config-file", str(workdir / "bus.conf"), "--nofork"], stderr=subprocess.DEVNULL
    )
    svc = None
    try:
        for _ in range(500):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.02"], check=True)
        svc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.timedated", "--synced", "yes" if synced else "no"],
            stdout=subprocess.PIPE,
            env={"DBUS_SYSTEM_BUS_ADDRESS": address, "PATH": "/usr/bin:/bin"},
            cwd=REPO,
        )
        assert svc.stdout is not None and svc.stdout.readline().strip() == b"READY"
        yield address
    finally:
        for p in (svc, bus):
            if p is not None:
                p.terminate()
                p.wait(5)
        if svc is not None and svc.stdout is not None:
            svc.stdout.close()


@pytest.mark.parametrize("synced", [True, False], ids=["chrony-synced", "not-synced"])
def test_the_clock_trusts_what_timedated_says(broker: Mosquitto, tmp_path: Path, synced: bool) -> None:
    assert not TIMESYNC_FLAG.exists(), "the test needs a machine whose timesyncd flag is absent"
    platform = Platform(tmp_path / "platform", broker.port)
    with timedated(tmp_path / "bus", synced=synced) as address:
        gw = GatewayProc(
            tmp_path / "gw",
            port=broker.port,
            gw_id=GW,
            extra=f'[trust]\ncommand_key = "{platform.pub_path}"\n',
            env={"DBUS_SYSTEM_BUS_ADDRESS": address},
        )
        col = Collector(broker.port, gw.pub).start()
        try:
            gw.start()
            doc = gw.wait_status(lambda d: d["link"]["state"] == "up", 30)
            if synced:
                doc = gw.wait_status(lambda d: d["clock"]["tq"] == "ntp", 10)
                col.wait_for(lambda _ms: bool(col.up("time.anchor")))
            else:
                assert doc["clock"]["tq"] == "persisted"
            # a command that expired a minute ago: refused once the clock can say so
            cid, data = platform.command(GW, "diag.snapshot", exp_in_s=-60)
            platform.send(GW, data)
            res = wait_result(col, lambda d: d["id"] == cid)
            assert (res.get("error") == "expired") is synced, res
        finally:
            gw.kill()
            col.stop()
            platform.stop()
