"""Not an attacker, but as bad: a gateway whose TLS key became unreadable while it
runs. The uplink retries and says why; every other task keeps working and storing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.support.broker import Mosquitto
from tests.support.gateway import GatewayProc, epochs, gnss_device
from tests.support.pki import CA
from tests.support.pty import Pty


def test_an_unreadable_tls_key_degrades_the_uplink_not_the_gateway(tmp_path: Path) -> None:
    ca = CA(tmp_path / "pki")
    bcrt, bkey = ca.issue("broker", server=True)
    broker = Mosquitto(
        tmp_path / "broker",
        extra=f"cafile {ca.cert_path}\ncertfile {bcrt}\nkeyfile {bkey}\nrequire_certificate true\n",
    )
    broker.start()
    crt, key = ca.issue("gw-test-1", server=False)
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        mqtt_extra=f'tls_ca = "{ca.cert_path}"\ntls_cert = "{crt}"\ntls_key = "{key}"\nreconnect_max_s = 0.5',
    )
    gw.start()
    try:
        gw.wait_status(lambda d: d["link"]["state"] == "up")
        key.unlink()  # lost while running (a technician's chown, a restore from a backup)
        broker.restart(signal.SIGTERM)  # the next session needs the key again
        doc = gw.wait_status(lambda d: "TLS: cannot use" in d["link"]["last_error"], 30)
        assert doc["link"]["state"] != "up" and doc["outbox"] is not None
        gw.check_alive()  # still running: only the uplink is degraded
    finally:
        gw.stop()
        broker.stop()
    log = gw.log.read_text()
    assert "TLS: cannot use" in log and "Traceback" not in log


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "check", "-c", str(config), *args], capture_output=True, text=True
    )


def test_check_fails_on_tls_files_the_service_user_cannot_read_and_the_start_only_warns(
    tmp_path: Path,
) -> None:
    """Run as root (as the docs say), provisioning leaves root-owned 0600 files: root can
    read them, the service user cannot. `gridedge check` says so, naming file and user;
    the unit's own check (`--starting`) lets the gateway start with its uplink down."""
    ca = CA(tmp_path / "pki")
    crt, key = ca.issue("gw-test-1", server=False)
    gw = GatewayProc(
        tmp_path / "gw",
        port=8883,
        mqtt_extra=f'tls_ca = "{ca.cert_path}"\ntls_cert = "{crt}"\ntls_key = "{key}"',
    )
    res = check(gw.config, "--user", "nobody")
    assert res.returncode == 1
    assert "error: mqtt.tls_key: nobody cannot" in res.stderr and "not ok for user nobody" in res.stderr
    started = check(gw.config, "--user", "nobody", "--starting")
    assert "warning: mqtt.tls_key: nobody cannot" in started.stderr
    # the gateway key itself is as unreadable: that one stops the start too
    assert started.returncode == 1 and "error: gateway.key: nobody cannot" in started.stderr
    key.unlink()
    res = check(gw.config)  # as ourselves
    assert res.returncode == 1 and f"error: mqtt.tls_key: {key} does not exist" in res.stderr
    res = check(gw.config, "--starting")
    assert res.returncode == 0 and "warning: mqtt.tls_key" in res.stderr


def test_a_gateway_started_without_its_tls_key_stores_and_waits(tmp_path: Path) -> None:
    ca = CA(tmp_path / "pki")
    crt, key = ca.issue("gw-test-1", server=False)
    key.unlink()
    pty = Pty(tmp_path / "ttyGNSS")
    gw = GatewayProc(
        tmp_path / "gw",
        port=8883,
        mqtt_extra=f'tls_ca = "{ca.cert_path}"\ntls_cert = "{crt}"\ntls_key = "{key}"\nreconnect_max_s = 0.5',
        devices=gnss_device(pty.link),
    )
    gw.start()
    try:
        gw.wait_status(lambda d: "TLS: cannot use" in d["link"]["last_error"], 30)
        pty.write(epochs(1_790_000_000))
        doc = gw.wait_status(lambda d: d["devices"]["gnss0"]["published"] >= 1 and d["outbox"]["depth"] >= 2)
        gw.check_alive()  # running, storing: only the uplink waits for its key
    finally:
        gw.stop()
        pty.unplug()
    assert doc["link"]["state"] != "up"
