"""Not an attacker, but as bad: a gateway whose TLS key became unreadable while it runs
(issue 15, finding 6). The uplink retries and says why; every other task keeps
working and storing."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.broker import Mosquitto
from tests.support.gateway import GatewayProc
from tests.support.pki import CA


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
