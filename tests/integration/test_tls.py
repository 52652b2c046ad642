"""Mutual TLS to mosquitto with a private CA; a broker we cannot trust is refused clearly."""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

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


def test_provision_csr_signed_by_the_ca_connects(tls_broker: tuple[Mosquitto, CA], tmp_path: Path) -> None:
    broker, ca = tls_broker
    out = tmp_path / "prov"
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "provision", "--id", "gw-test-1", "--out", str(out), "--csr"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert os.stat(out / "gateway.tls.key").st_mode & 0o777 == 0o600
    csr = x509.load_pem_x509_csr((out / "gateway.csr").read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-test-1"
    crt = ca.sign_csr(csr, tmp_path / "gw.crt")
    gw = GatewayProc(
        tmp_path / "gw", port=broker.port, mqtt_extra=tls_mqtt(ca.cert_path, crt, out / "gateway.tls.key")
    )
    gw.start()
    try:
        gw.wait_status(lambda d: d["link"]["state"] == "up")
    finally:
        gw.stop()


def test_acl_keeps_a_gateway_to_its_own_topics(tmp_path: Path) -> None:
    ca = CA(tmp_path / "pki")
    crt, key = ca.issue("broker", server=True)
    acl = tmp_path / "acl"
    acl.write_text((Path(__file__).resolve().parents[2] / "config" / "mosquitto-acl.example").read_text())
    broker = Mosquitto(
        tmp_path / "acl-broker",
        extra=(
            f"cafile {ca.cert_path}\ncertfile {crt}\nkeyfile {key}\nrequire_certificate true\n"
            f"use_identity_as_username true\nuse_username_as_clientid true\nallow_anonymous false\n"
            f"acl_file {acl}\n"  # the identity settings of config/mosquitto-gridedge.conf
        ),
    )
    broker.start()
    gcrt, gkey = ca.issue("gw-test-1", server=False)
    gw = GatewayProc(tmp_path / "gw", port=broker.port, mqtt_extra=tls_mqtt(ca.cert_path, gcrt, gkey))
    pcrt, pkey = ca.issue("platform-ingest", server=False)
    col = Collector(broker.port, gw.pub)
    col.client.tls_set(
        ca_certs=str(ca.cert_path), certfile=str(pcrt), keyfile=str(pkey), tls_version=ssl.PROTOCOL_TLS_CLIENT
    )
    col.start()
    ecrt, ekey = ca.issue("gw-evil", server=False)
    # it asks for the real gateway's client id: the broker gives it its certificate's instead,
    # so it cannot take over (and keep kicking off) the real gateway's session
    evil = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="gw-test-1")
    evil.tls_set(
        ca_certs=str(ca.cert_path), certfile=str(ecrt), keyfile=str(ekey), tls_version=ssl.PROTOCOL_TLS_CLIENT
    )
    gw.start()
    try:
        col.wait_for(lambda ms: any(m.payload["kind"] == "gateway.status" for m in ms), timeout=15)
        connected = threading.Event()
        evil.on_connect = lambda *_a: connected.set()
        evil.connect("127.0.0.1", broker.port)
        evil.loop_start()
        assert connected.wait(10), "the broker let the other gateway connect (only its topics are limited)"
        # a real, validly signed message of gw-test-1, replayed by another gateway on gw-test-1's topic
        stolen = next(m.raw for m in col.messages if m.payload["kind"] == "gateway.status")
        for topic in ("gridedge/v1/gw-test-1/up/gnss.fix", "gridedge/v1/gw-test-1/status"):
            # mosquitto drops a denied publish, or (as 2.0.11 does here) drops the client
            with contextlib.suppress(RuntimeError):
                evil.publish(topic, stolen, qos=1).wait_for_publish(5)
        time.sleep(1.0)
        assert not [m for m in col.messages if m.topic.endswith("/up/gnss.fix")]
        assert sum(1 for m in col.messages if m.topic.endswith("/status")) == 1
        assert gw.status()["link"]["sessions"] == 1  # never kicked off by the impostor
    finally:
        evil.loop_stop()
        evil.disconnect()
        gw.stop()
        col.stop()
        broker.stop()


def test_broker_refusing_credentials_is_a_permanent_error(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "closed-broker", extra="allow_anonymous false\n")
    broker.start()
    gw = GatewayProc(tmp_path / "gw", port=broker.port)
    gw.start()
    try:
        doc = gw.wait_status(lambda d: d["link"]["last_error"] != "", timeout=15)
    finally:
        gw.stop()
        broker.stop()
    assert "CONNACK 5" in doc["link"]["last_error"]
    assert "AuthRejected" not in gw.log.read_text()  # reported as a sentence, not a traceback
    assert "retrying in" in gw.log.read_text()
