"""The arm64 package (a Raspberry Pi's) installed and run on arm64 Debian 12, here through
qemu-user-static: its wheels are the target's, so this is where a wrong one would show.

Installed with no network, provisioned, then the gateway run by the service user against
the host's broker with an AIS receiver on UDP: a message it signs on arm64 (cryptography,
cbor2's C extension, SQLite) must verify here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pyais
import pytest

from tests.deploy.conftest import FIGURES
from tests.support.broker import Mosquitto, free_port
from tests.support.collector import Collector
from tests.support.machine import copy_rootfs, nspawn, rootfs, tool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Enough for the package's dependencies; systemd for deb-systemd-helper in postinst.
PACKAGES = ("python3", "adduser", "systemd")


def test_arm64_package_installs_offline_and_signs_on_arm64(
    debs: dict[str, Path], broker: Mosquitto, tmp_path: Path
) -> None:
    root = copy_rootfs(rootfs("arm64", PACKAGES), tmp_path / "arm64")
    deb = debs["arm64"]
    shutil.copy(deb, root / "root" / deb.name)
    t0 = time.monotonic()
    # --no-install-recommends: bluez is recommended, and this rootfs has no network to fetch it
    nspawn(
        root,
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        f"/root/{deb.name}",
        private_network=True,
    )
    FIGURES["install arm64 under qemu-user"] = f"{time.monotonic() - t0:.1f} s"
    assert nspawn(root, "gridedge", "--version").strip() == "gridedge 0.1.0"
    # a fleet provisioned as a technician does it: a sheet of gateways and a template that
    # sets the broker; one gateway's directory is what goes onto this box, untouched
    udp_port = free_port()
    (root / "root" / "stations.csv").write_text(
        "gateway;device;kind;url\n"
        + "".join(f"gw-fleet-{i:02d};ais-udp;ais;udp://127.0.0.1:{udp_port}\n" for i in range(20))
    )
    (root / "root" / "fleet.toml").write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n')
    nspawn(root, "gridedge", "provision", "--from", "/root/stations.csv", "--template", "/root/fleet.toml",
           "--out", "/srv/fleet")  # fmt: skip
    for i in range(20):
        config = f"/srv/fleet/gw-fleet-{i:02d}/gateway.toml"
        assert "ok" in nspawn(root, "gridedge", "check", "-c", config)
    nspawn(root, "sh", "-c", "cp -a /srv/fleet/gw-fleet-07/. /etc/gridedge/")
    assert "ok" in nspawn(root, "runuser", "-u", "gridedge", "--", "gridedge", "check")
    col = Collector(broker.port, root / "etc" / "gridedge" / "gateway.pub").start()
    run = subprocess.Popen(
        [
            tool("systemd-nspawn"),
            "--quiet",
            f"--directory={root}",
            "--register=no",
            "--keep-unit",
            "--",
            "runuser",
            "-u",
            "gridedge",
            "--",
            "gridedge",
            "run",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        col.wait_for(lambda ms: any(m.payload["kind"] == "gateway.status" for m in ms), timeout=120)
        (s,) = pyais.encode_dict({"type": 1, "mmsi": 412440777, "lat": 21.9, "lon": 112.8}, talker_id="AI")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(s.encode() + b"\r\n", ("127.0.0.1", udp_port))
        msgs = col.wait_for(lambda ms: any(m.payload["kind"] == "ais.position" for m in ms), timeout=60)
    finally:
        run.terminate()
        out = run.communicate(timeout=60)[0].decode(errors="replace")
        col.stop()
    assert not col.invalid, col.invalid
    (pos,) = [m for m in msgs if m.payload["kind"] == "ais.position"]
    assert pos.payload["recs"][0]["d"]["mmsi"] == 412440777, out
