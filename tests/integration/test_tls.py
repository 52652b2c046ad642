"""Mutual TLS to mosquitto with a private CA; a broker we cannot trust is refused clearly."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc
from tests.support.pki import CA


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, CA]]:
    ca = CA(tmp_path / "pki")
    crt, key = ca.issue("broker", server=True)
    b = Mosquitto(
        tmp_path / "tls-broker",
        extra=(
            f"cafile {ca.cert_path}\ncertfile {crt}\nkeyfile {key}\n"
            "require_certificate true\nuse_identity_as_username true\n"
        ),
    )
    b.start()
    yield b, ca
    b.stop()


def tls_mqtt(ca: Path, crt: Path, key: Path) -> str:
    return (
        f'tls_ca = "{ca}"\ntls_cert = "{crt}"\ntls_key = "{key}"\n'
        "reconnect_min_s = 0.05\nreconnect_max_s = 0.5"
    )


def test_gateway_connects_with_its_client_certificate(
    tls_broker: tuple[Mosquitto, CA], tmp_path: Path
) -> None:
    broker, ca = tls_broker
    crt, key = ca.issue("gw-test-1", server=False)
    gw = GatewayProc(tmp_path / "gw", port=broker.port, mqtt_extra=tls_mqtt(ca.cert_path, crt, key))
    pcrt, pkey = ca.issue("platform", server=False)
    col = Collector(broker.port, gw.pub)
    col.client.tls_set(
        ca_certs=str(ca.cert_path), certfile=str(pcrt), keyfile=str(pkey), tls_version=ssl.PROTOCOL_TLS_CLIENT
    )
    col.start()
    gw.start()
    try:
        gw.wait_status(lambda d: d["link"]["state"] == "up")
        msgs = col.wait_for(lambda ms: any(m.payload["kind"] == "gateway.status" for m in ms), timeout=10)
    finally:
        gw.stop()
        col.stop()
    assert msgs[0].payload["gw"] == "gw-test-1"


def test_untrusted_broker_is_refused_with_a_clear_error(
    tls_broker: tuple[Mosquitto, CA], tmp_path: Path
) -> None:
    broker, ca = tls_broker
    crt, key = ca.issue("gw-test-1", server=False)
    other = CA(tmp_path / "other-pki", name="someone else's CA")
    gw = GatewayProc(tmp_path / "gw", port=broker.port, mqtt_extra=tls_mqtt(other.cert_path, crt, key))
    gw.start()
    try:
        doc = gw.wait_status(lambda d: "not trusted" in d["link"]["last_error"], timeout=15)
    finally:
        gw.stop()
    assert doc["link"]["state"] != "up"
    assert "TLS: broker certificate not trusted" in doc["link"]["last_error"]
    assert "BEGIN" not in gw.log.read_text()  # no key material in logs


def test_client_without_certificate_is_refused_by_the_broker(
    tls_broker: tuple[Mosquitto, CA], tmp_path: Path
) -> None:
    broker, ca = tls_broker
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        mqtt_extra=f'tls_ca = "{ca.cert_path}"\nreconnect_min_s = 0.05\nreconnect_max_s = 0.5',
    )
    gw.start()
    try:
        doc = gw.wait_status(lambda d: d["link"]["last_error"] != "", timeout=15)
    finally:
        gw.stop()
    assert doc["link"]["state"] != "up"
