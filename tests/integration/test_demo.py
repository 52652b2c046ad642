"""The README's first command: the demo starts a broker, devices and a gateway and shows verified messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from tests.support.broker import mosquitto_bin
from tests.support.gateway import REPO


@pytest.mark.slow
def test_demo_shows_verified_messages(tmp_path: Path) -> None:
    if mosquitto_bin() is None:
        pytest.fail("mosquitto is not installed; scripts/test installs it")
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "demo", "--duration", "30", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    verified = [ln for ln in lines if " ✓ " in ln]
    kinds = (
        "gateway.status",
        "device.state",
        "gnss.fix",
        "ais.position",
        "vessels.outside",
        "sos.alarm",
        "worker.down",
        "beidou.position",
        "gateway.posture",
    )
    for kind in kinds:
        assert any(f" {kind} " in ln for ln in verified), f"no verified {kind} in:\n{res.stdout}"
    assert not [ln for ln in lines if " ✗ " in ln]
    assert any(ln.startswith("gridedge demo: status page http://127.0.0.1:") for ln in lines), res.stdout
    # it ends by saying what it showed, and shows numbers as a person reads them
    assert any(ln.startswith("gridedge demo: done.") for ln in lines), res.stdout[-2000:]
    assert not re.search(r"\d\.\d{7,}", res.stdout), "a raw float in the demo's output"
    # the config the demo writes is one the schema takes, as every config the project writes
    schema = json.loads((REPO / "config" / "gateway.schema.json").read_text())
    jsonschema.validate(tomllib.loads((tmp_path / "gateway.toml").read_text()), schema)
    assert any("sos-w042 shows 'received'" in ln for ln in lines), res.stdout
    # the uplink fails: an SOS goes by SMS, and its MQTT copy later is the same message
    sms = [ln for ln in verified if " sos.alarm " in ln and "BY SMS" in ln]
    assert sms, res.stdout
    seq = sms[0].split("seq=")[1].split()[0]
    assert any(f"seq={seq} " in ln and "the same message as the SMS" in ln for ln in verified), res.stdout
    # a boat beyond AIS range heard by BeiDou counts in the recall
    assert any(" vessels.outside " in ln and "outside (BeiDou)" in ln for ln in verified), res.stdout
    assert any(" gateway.posture " in ln and "posture=emergency" in ln for ln in verified), res.stdout
    # with neither the broker nor the cell network, an SOS goes by BeiDou, signed, and
    # its MQTT copy later is the same message
    bd = [ln for ln in verified if " sos.alarm " in ln and "BY BEIDOU" in ln and "signed" in ln]
    assert bd, res.stdout
    seq = bd[0].split("seq=")[1].split()[0]
    assert any(f"seq={seq} " in ln and "the same message as the BeiDou one" in ln for ln in verified), (
        res.stdout
    )
