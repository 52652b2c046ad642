"""Provisioning a fleet from a stations file: one directory per gateway, each config
loading with its devices, the registration sheet's fingerprints matching the keys."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from drivers.parts import load_config as load
from floor.envelope import load_public_key, raw_public

REPO = Path(__file__).resolve().parents[2]
KEY = "00112233445566778899aabbccddeeff"


def run(*args: str, lang: str = "C.UTF-8") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))} | {"LANG": lang}
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "provision", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )


def test_a_fleet_from_a_stations_file(tmp_path: Path) -> None:
    stations = tmp_path / "stations.csv"
    stations.write_text(
        "gateway,device,kind,worker,address,key,port,url,baudrate\n"
        "jm-harbour-01,gnss-mast,gnss,,,,/dev/serial/by-id/usb-u-blox_GNSS,,9600\n"
        f"jm-harbour-01,sos-w042,sos_button,w-042,F0:00:00:00:00:42,{KEY},,,\n"
        "jm-harbour-01,cam-w042,body_camera,w-042,F1:00:00:00:00:42,,,,\n"
        "jm-pier-02,ais-mast,ais,,,,,udp://0.0.0.0:10110,\n"
    )
    template = tmp_path / "fleet.toml"
    template.write_text('[trust]\n# command_key = "platform.pub"  # {id} gets the gateway id\n')
    out = tmp_path / "fleet"
    res = run(
        "--from", str(stations), "--out", str(out), "--template", str(template), "--owner", "nobody-here"
    )
    assert res.returncode == 0, res.stderr
    assert "jm-harbour-01" in res.stdout and ("█" in res.stdout or "▀" in res.stdout)  # a QR code each
    harbour = load(out / "jm-harbour-01" / "gateway.toml")  # keys present and private: it checks
    assert [d.id for d in harbour.devices] == ["gnss-mast"] and harbour.devices[0].kind == "gnss"
    assert {w.id: w.worker for w in harbour.wearables} == {"sos-w042": "w-042", "cam-w042": "w-042"}
    assert harbour.web.listen == "127.0.0.1:8480" and harbour.web.token_file is not None
    pier = load(out / "jm-pier-02" / "gateway.toml")
    assert [d.id for d in pier.devices] == ["ais-mast"] and not pier.wearables
    assert "# jm-pier-02 gets the gateway id" in (out / "jm-pier-02" / "gateway.toml").read_text()
    with open(out / "registration.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["gateway"] for r in rows] == ["jm-harbour-01", "jm-pier-02"]
    for r in rows:
        pub = load_public_key((out / r["gateway"] / "gateway.pub").read_bytes())
        digest = hashlib.sha256(raw_public(pub)).hexdigest()
        assert r["sha256"] == digest and r["kid"] == hashlib.sha256(raw_public(pub)).hexdigest()[:16]
        assert " ".join(digest[i : i + 4] for i in range(0, 64, 4)) in res.stdout
        assert (out / r["gateway"] / "fingerprint.svg").read_text().startswith("<?xml")


def test_a_bad_row_is_named(tmp_path: Path) -> None:
    stations = tmp_path / "stations.csv"
    stations.write_text("gateway,device,kind,worker,address\ngw-1,sos-1,sos_button,w-1,F0:00:00:00:00:01\n")
    res = run("--from", str(stations), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "row 2" in res.stderr and "key" in res.stderr, res.stderr
    stations.write_text("gateway,colour\ngw-1,blue\n")
    res = run("--from", str(stations), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "colour" in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_row_is_named_in_the_technicians_language(tmp_path: Path) -> None:
    stations = tmp_path / "stations.csv"
    stations.write_text("gateway,device,kind,worker,address\ngw-1,sos-1,sos_button,w-1,F0:00:00:00:00:01\n")
    res = run("--from", str(stations), "--out", str(tmp_path / "out"), lang="zh_CN.UTF-8")
    assert res.returncode == 2, res.stderr
    # the row, the key and the path as they are; the words around them in Chinese
    assert f"{stations} 第 2 行：key 必填" in res.stderr, res.stderr
    stations.write_text("gateway,device,kind\ngw-1,radar-1,radar\n")
    res = run("--from", str(stations), "--out", str(tmp_path / "out"), lang="zh_CN.UTF-8")
    assert res.returncode == 2 and "类型 'radar' 不在" in res.stderr, res.stderr


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def test_twenty_gateways_from_a_template_that_sets_the_broker_all_check(tmp_path: Path) -> None:
    """The first thing a fleet's template sets is the broker: it is merged into each
    config (not appended as a second [mqtt]), a gateway's own row may name another, and
    every config made passes `gridedge check`; their state is where an installed
    gateway's may be written, or where --state-dir says."""
    rows = ["gateway;broker;device;kind;worker;address;key;port;url;baudrate;allow"]
    for i in range(20):
        broker = "10.20.0.9:1884" if i == 7 else ""
        rows.append(
            f"jm-{i:02d};{broker};ais-{i};ais;;;;;udp://0.0.0.0:{10110 + i};;192.168.4.20 10.1.0.0/24"
        )
        rows.append(f"jm-{i:02d};;sos-{i};sos_button;w-{i};F0:00:00:00:00:{i:02X};{KEY};;;;")
    (tmp_path / "stations.csv").write_text("\n".join(rows) + "\n")  # a spreadsheet's semicolons
    (tmp_path / "fleet.toml").write_text(
        '[mqtt]\nhost = "10.20.0.5"  # the fleet broker\nport = 1883\ninsecure = true\n'
        '[outbox]\nmax_bytes = 67108864\n[trust]\n# command_key = "platform.pub"  # {id}\n'
    )
    out = tmp_path / "fleet"
    res = run(
        "--from", str(tmp_path / "stations.csv"), "--template", str(tmp_path / "fleet.toml"),
        "--out", str(out), "--owner", "nobody-here",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    for i in range(20):
        config = out / f"jm-{i:02d}" / "gateway.toml"
        result = check(config)
        assert result.returncode == 0, (config, result.stdout, result.stderr)
        cfg = load(config)
        assert (cfg.mqtt.host, cfg.mqtt.port) == (("10.20.0.9", 1884) if i == 7 else ("10.20.0.5", 1883))
        assert cfg.outbox.max_bytes == 64 << 20 and str(cfg.gateway.state_dir) == "/var/lib/gridedge"
        assert [str(n) for n in cfg.devices[0].source.allow] == ["192.168.4.20/32", "10.1.0.0/24"]  # type: ignore[union-attr]
        assert {w.id: w.worker for w in cfg.wearables} == {f"sos-{i}": f"w-{i}"}
        assert f"# jm-{i:02d}" in config.read_text() and "# the fleet broker" in config.read_text()
    svg = (out / "jm-03" / "fingerprint.svg").read_text()
    assert ">jm-03</text>" in svg  # the id printed under the code, and the fingerprint's groups
    fingerprint = hashlib.sha256(
        raw_public(load_public_key((out / "jm-03" / "gateway.pub").read_bytes()))
    ).hexdigest()
    assert fingerprint[:4] + " " + fingerprint[4:8] in svg
    res = run(
        "--from", str(tmp_path / "stations.csv"), "--template", str(tmp_path / "fleet.toml"),
        "--out", str(tmp_path / "lab"), "--owner", "nobody-here", "--state-dir", "/srv/gridedge/state",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert str(load(tmp_path / "lab" / "jm-00" / "gateway.toml").gateway.state_dir) == "/srv/gridedge/state"


def test_every_bad_row_of_a_sheet_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    stations = tmp_path / "stations.csv"
    stations.write_text(
        "gateway,broker,device,kind,worker,address,key\n"
        f"gw-1,,sos-1,sos_button,,F0:00:00:00:00:01,{KEY}\n"  # no worker
        "gw-2,,sos-2,sos_button,w-2,F0:00:00:00:00:02,zz\n"  # a key that is no key
        "gw-3,broker host,,,,,\n"  # a broker that is no host
        f"gw-4,,sos-4,sos_button,w-4,F0:00:00:00:00:04,{KEY}\n"
    )
    res = run("--from", str(stations), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 3, res.stderr
    assert "row 2: worker is required" in lines[0] and "[A-Za-z0-9" not in lines[0]
    assert "row 3: key" in lines[1] and "row 4: broker 'broker host'" in lines[2]
    assert not (tmp_path / "out").exists()
    # a template that makes a config the gateway would refuse is refused by provision too
    stations.write_text(
        f"gateway,device,kind,worker,address,key\ngw-1,sos-1,sos_button,w-1,F0:00:00:00:00:01,{KEY}\n"
    )
    (tmp_path / "fleet.toml").write_text('[mqtt]\nhost = "broker.example.cn"\n')  # plaintext, far away
    res = run(
        "--from", str(stations), "--template", str(tmp_path / "fleet.toml"), "--out", str(tmp_path / "out")
    )
    assert res.returncode == 2 and "gw-1: the config would not load: mqtt.host" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_check_warns_of_a_serial_port_that_is_not_there(tmp_path: Path) -> None:
    out = tmp_path / "gw"
    assert run("--id", "gw-9", "--out", str(out), "--owner", "nobody-here").returncode == 0
    config = out / "gateway.toml"
    config.write_text(config.read_text().replace("/dev/ttyUSB0", "/dev/ttyGONE9"))
    result = check(config)
    assert result.returncode == 0, result.stderr  # it runs: the gateway keeps trying the port
    said = result.stdout + result.stderr
    assert "/dev/ttyGONE9 does not exist" in said, said
    assert "stream devices: 1;" in said  # no "1 devices"


def test_provision_prints_where_the_page_is(tmp_path: Path) -> None:
    """The page's 401 says to open the address provision printed: it does print it."""
    res = run("--id", "gw-9", "--out", str(tmp_path / "gw"), "--owner", "nobody-here")
    assert res.returncode == 0, res.stderr
    token = tmp_path / "gw" / "web.token"
    assert f"status page: http://127.0.0.1:8480/?token=$(sudo cat {token})" in res.stdout, res.stdout
