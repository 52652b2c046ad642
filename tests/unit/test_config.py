"""Config: every mistake is one line naming the key path and the line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.gnss.part import GnssDevice
from drivers.parts import load_config as load
from floor.config import SerialPort
from floor.errors import ConfigError

GOOD = """\
[gateway]
id = "jm-taishan-gh-001"
key = "keys/gateway.key"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = 1883
topic_prefix = "gridedge/v1"

[outbox]
max_bytes = 268435456
batch_ms = 250

[[devices]]
id = "gnss0"
kind = "gnss"
port = "/dev/ttyUSB0"
baudrate = 9600
min_interval_s = 1.0
min_distance_m = 0.0
"""


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "gateway.key"
    key.write_text("not read by load()")
    key.chmod(0o600)
    return tmp_path


def write(confdir: Path, text: str) -> Path:
    p = confdir / "gateway.toml"
    p.write_text(text)
    return p


def test_good_config_loads_with_paths_relative_to_the_file(confdir: Path) -> None:
    cfg = load(write(confdir, GOOD))
    assert cfg.gateway.id == "jm-taishan-gh-001"
    assert cfg.gateway.key == confdir / "keys" / "gateway.key"
    assert cfg.gateway.state_dir == confdir / "state"
    assert cfg.outbox.batch_ms == 250
    (dev,) = cfg.devices
    assert isinstance(dev, GnssDevice)
    assert isinstance(dev.source, SerialPort)
    assert dev.source.port == "/dev/ttyUSB0" and dev.source.baudrate == 9600
    assert dev.min_interval_s == 1.0


CASES = [
    ("baudrate = 9600", 'baudrate = "fast"', 'devices[0].baudrate: expected an integer, got "fast"', 19),
    ("baudrate = 9600", "baudrate = 9601", "devices[0].baudrate: expected one of", 19),
    ("port = 1883", "port = 70000", "mqtt.port: must be at most 65535", 8),
    ("batch_ms = 250", "batch_ms = 250\nbatchms = 5", "outbox.batchms: unknown key", 14),
    ('id = "jm-taishan-gh-001"\n', "", "gateway.id: is required", 1),
    ('id = "jm-taishan-gh-001"', 'id = "jm/taishan/#"', 'gateway.id: "jm/taishan/#" is not an id', 2),
    ('kind = "gnss"', 'kind = "radar"', "devices[0].kind: expected one of", 17),
    ('host = "127.0.0.1"', 'host = "broker.example.net"', "mqtt.host: plaintext MQTT", 7),
    ("min_interval_s = 1.0", "min_interval_s = -1", "devices[0].min_interval_s: must be at least 0", 20),
    ('topic_prefix = "gridedge/v1"', 'topic_prefix = "grid/#"', "mqtt.topic_prefix", 9),
    ("max_bytes = 268435456", "max_bytes = true", "outbox.max_bytes: expected an integer, got true", 12),
    ('port = "/dev/ttyUSB0"\n', "", "devices[0].port: is required", 15),
]


@pytest.mark.parametrize(("old", "new", "message", "line"), CASES)
def test_each_mistake_names_key_and_line(confdir: Path, old: str, new: str, message: str, line: int) -> None:
    assert old in GOOD
    path = write(confdir, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load(path)
    text = str(err.value)
    assert "\n" not in text
    assert message in text
    assert f"gateway.toml:{line}:" in text, text


def test_duplicate_device_id(confdir: Path) -> None:
    second = GOOD[GOOD.index("[[devices]]") :]
    with pytest.raises(ConfigError, match=r"gateway.toml:24: devices\[1\].id: \"gnss0\" is already used"):
        load(write(confdir, GOOD + "\n" + second))


def test_toml_syntax_error_names_the_line(confdir: Path) -> None:
    with pytest.raises(ConfigError, match=r"gateway.toml:8: not valid TOML"):
        load(write(confdir, GOOD.replace("port = 1883", "port = = 1883")))


def test_private_key_readable_by_others_is_refused(confdir: Path) -> None:
    (confdir / "keys" / "gateway.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"gateway.toml:3: gateway.key: .* readable by group or others"):
        load(write(confdir, GOOD))


def test_missing_key_file_is_named(confdir: Path) -> None:
    (confdir / "keys" / "gateway.key").unlink()
    with pytest.raises(ConfigError, match=r"gateway.key: cannot read .*gateway.key"):
        load(write(confdir, GOOD))


def test_tls_cert_needs_its_key(confdir: Path) -> None:
    text = GOOD.replace('host = "127.0.0.1"', 'host = "127.0.0.1"\ntls_ca = "ca.crt"\ntls_cert = "gw.crt"')
    with pytest.raises(ConfigError, match=r"mqtt\.tls_cert: tls_cert and tls_key go together"):
        load(write(confdir, text))


def test_insecure_allows_plaintext_to_a_remote_broker(confdir: Path) -> None:
    text = GOOD.replace('host = "127.0.0.1"', 'host = "broker.example.net"\ninsecure = true')
    assert load(write(confdir, text)).mqtt.insecure


def test_cli_check_exit_codes(confdir: Path) -> None:
    good = write(confdir, GOOD)
    ok = subprocess.run(
        [sys.executable, "-m", "tools.cli", "check", "-c", str(good)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    bad = confdir / "bad.toml"
    bad.write_text(GOOD.replace("baudrate = 9600", 'baudrate = "fast"'))
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "check", "-c", str(bad)], capture_output=True, text=True
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f'gridedge check: {bad}:19: devices[0].baudrate: expected an integer, got "fast"'
    ]


def test_cli_provision_writes_a_private_key_and_a_config_that_checks(tmp_path: Path) -> None:
    out = tmp_path / "prov"
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "provision", "--id", "gw-7", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert os.stat(out / "gateway.key").st_mode & 0o777 == 0o600
    assert (out / "gateway.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    cfg = load(out / "gateway.toml")
    assert cfg.gateway.id == "gw-7"
    again = subprocess.run(
        [sys.executable, "-m", "tools.cli", "provision", "--id", "gw-7", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "exists" in again.stderr


WEARABLES = """
[[devices]]
id = "sos-1"
kind = "sos_button"
worker = "w-42"
address = "f0:12:34:56:78:9a"
key = "00112233445566778899AABBCCDDEEFF"

[[devices]]
id = "cam-1"
kind = "body_camera"
worker = "w-42"
irk = "EC0234A357C8AD05341010A60A397D9B"

[ble]
backend = "sim"
probe_s = 2.5

[ble.options]
hci = "tcp-client:127.0.0.1:7020"
"""


def test_wearables_and_ble(confdir: Path) -> None:
    cfg = load(write(confdir, GOOD + WEARABLES))
    assert [d.id for d in cfg.devices] == ["gnss0"]  # wearables are not serial drivers
    sos, cam = cfg.wearables
    assert (sos.kind, sos.worker, sos.address, sos.irk) == ("sos_button", "w-42", "F0:12:34:56:78:9A", None)
    assert sos.event_key == bytes.fromhex("00112233445566778899aabbccddeeff") and not sos.insecure
    assert "00112233" not in repr(sos)  # a key is never printed with its wearable
    assert cam.irk == "ec0234a357c8ad05341010a60a397d9b" and cam.address is None
    assert cfg.ble.backend == "sim" and cfg.ble.probe_s == 2.5
    assert dict(cfg.ble.options) == {"hci": "tcp-client:127.0.0.1:7020"}
    assert load(write(confdir, GOOD)).ble.backend == "bleak"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('worker = "w-42"\naddress', 'worker = "w/42"\naddress', "devices[1].worker: must match"),
        ('address = "f0:12:34:56:78:9a"', 'address = "f0:12:34"', "devices[1].address: must be AA:BB"),
        ('address = "f0:12:34:56:78:9a"', "", "devices[1].address: give exactly one of address or irk"),
        ('irk = "EC0234A357C8AD05341010A60A397D9B"', 'irk = "ec02"', "devices[2].irk: must be 32 hex digits"),
        ('key = "00112233445566778899AABBCCDDEEFF"\n', "", "devices[1].key: is required"),
        ('key = "00112233445566778899AABBCCDDEEFF"', 'key = "0011"', "devices[1].key: must be 32 hex digits"),
        (
            'key = "00112233445566778899AABBCCDDEEFF"',
            'key = "00112233445566778899AABBCCDDEEFF"\ninsecure = true',
            "devices[1].insecure: a wearable with a key authenticates its events",
        ),
        (
            'backend = "sim"',
            'backend = "bluez"',
            "ble.backend: expected one of bleak, sim",
        ),
        ("probe_s = 2.5", "probe_s = 0", "ble.probe_s: must be at least 0.1"),
        ("probe_s = 2.5", "probe_s = 2.5\nscan = 1", "ble.scan: unknown key"),
    ],
)
def test_wearable_mistakes(confdir: Path, old: str, new: str, message: str) -> None:
    text = GOOD + WEARABLES
    assert old in text
    with pytest.raises(ConfigError) as err:
        load(write(confdir, text.replace(old, new, 1)))
    assert message in str(err.value)


def test_a_wearable_that_cannot_authenticate_is_believed_only_when_marked_insecure(confdir: Path) -> None:
    text = GOOD + WEARABLES.replace('key = "00112233445566778899AABBCCDDEEFF"', "insecure = true")
    sos, cam = load(write(confdir, text)).wearables
    assert sos.insecure and sos.event_key is None
    assert cam.event_key is None and not cam.insecure  # a camera raises no alarm: no key needed


@pytest.mark.parametrize(
    ("allow", "message"),
    [
        ('allow = ["10.0.0.300"]', "'10.0.0.300' is not an IP address or network"),
        ("allow = []", "is empty: it would refuse every sender"),
        ('allow = "10.0.0.1"', "expected an array of strings"),
    ],
)
def test_a_udp_allow_list_names_what_is_wrong(confdir: Path, allow: str, message: str) -> None:
    dev = f'\n[[devices]]\nid = "ais-lan"\nkind = "ais"\nurl = "udp://0.0.0.0:10110"\n{allow}\n'
    with pytest.raises(ConfigError, match=re.escape(f"devices[1].allow: {message}")):
        load(write(confdir, GOOD + dev))


def test_an_allow_list_is_for_listeners_only(confdir: Path) -> None:
    dev = '\n[[devices]]\nid = "ais-tcp"\nkind = "ais"\nurl = "tcp://10.0.0.9:2000"\nallow = ["10.0.0.9"]\n'
    with pytest.raises(ConfigError, match=r"devices\[1\].allow: applies to udp:// listeners only"):
        load(write(confdir, GOOD + dev))
    ok = '\n[[devices]]\nid = "ais-lan"\nkind = "ais"\nurl = "udp://[::]:10110"\n'
    ok += 'allow = ["fd00::/8", "10.1.0.0/24"]\n'
    (dev_cfg,) = [d for d in load(write(confdir, GOOD + ok)).devices if d.id == "ais-lan"]
    assert [str(n) for n in dev_cfg.source.allow] == ["fd00::/8", "10.1.0.0/24"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[sms]\nport = "/dev/ttyUSB2"\n', "numbers"),
        ('[sms]\nport = "/dev/ttyUSB2"\nnumbers = ["+86 138"]\n', "not a phone number"),
        ('[sms]\nport = "/dev/ttyUSB2"\nnumbers = ["10086"]\nkinds = ["gnss.fix"]\n', "life-safety"),
        ('[[geofences]]\nid = "h"\npolygon = [[1, 1], [1, 2], [2, 2]]\nfleet = [12]\n', "MMSI"),
    ],
)
def test_sms_and_fleet_mistakes_are_named(section: str, message: str) -> None:
    from drivers.parts import parse_config as parse

    text = '[gateway]\nid = "gw-1"\nkey = "k"\nstate_dir = "s"\n' + section
    with pytest.raises(ConfigError) as err:
        parse(text, check_files=False)
    assert message in str(err.value)
