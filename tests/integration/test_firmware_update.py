"""Firmware updates through the gateway process: a signed `firmware.update`, image chunks
over a real mosquitto, flashing with SMP over a pty, `fw.progress` and `fw.result`; and
every bad update rejected, reported, with the old firmware still on the device."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from floor.envelope import Signer, load_private_key
from tests.support.broker import Mosquitto
from tests.support.collector import Collector
from tests.support.gateway import REPO, GatewayProc, gnss_device, trust_clock
from tests.support.platform import FirmwarePlatform
from tests.support.pty import Pty
from tests.support.smp_device import SmpDevice

GW = "gw-fw-1"
CHUNK = 1024


def image(version: str, size: int = 12_000) -> bytes:
    return f"VER={version};".encode() + os.urandom(size)


def recs(col: Collector, kind: str) -> list[dict[str, Any]]:
    return [r["d"] for m in col.up(kind) for r in m.payload["recs"]]


def wait_rec(col: Collector, kind: str, pred: Any, timeout: float = 30.0) -> dict[str, Any]:
    col.wait_for(lambda _ms: any(pred(d) for d in recs(col, kind)), timeout=timeout)
    return next(d for d in recs(col, kind) if pred(d))


class Rig:
    def __init__(self, broker: Mosquitto, tmp_path: Path) -> None:
        self.platform = FirmwarePlatform(tmp_path / "platform", broker.port)
        self.device = SmpDevice(tmp_path / "ttySMP", running="1.4.2")
        self.gnss = Pty(tmp_path / "ttyGNSS")  # a GNSS fix makes the clock trustworthy: expiry counts
        self.gw = GatewayProc(
            tmp_path / "gw",
            port=broker.port,
            gw_id=GW,
            extra=(
                f'[trust]\ncommand_key = "{self.platform.pub_path}"\n'
                f'firmware_key = "{self.platform.fw_pub_path}"\n'
                "[firmware]\nsmp_timeout_s = 2.0\nreboot_wait_s = 10.0\ndownload_timeout_s = 4.0\n"
            ),
            devices=gnss_device(self.gnss.link)
            + (
                '[[devices]]\nid = "btn-fw"\nkind = "sos_button"\nworker = "w-1"\n'
                'address = "F0:00:00:00:00:77"\nfw_class = "sos-button-v2"\n'
                'key = "0123456789abcdef0123456789abcdef"\n'
                f'smp_port = "{self.device.link}"\n'
            ),
        )
        self.col = Collector(broker.port, self.gw.pub).start()

    def start(self) -> None:
        self.gw.start()
        self.gw.wait_status(lambda d: d["link"]["state"] == "up")
        trust_clock(self.gw, self.gnss)

    def update(self, manifest: bytes, image_id: str, devices: list[str] | None = None) -> dict[str, Any]:
        args = {
            "manifest": manifest,
            "image_id": image_id,
            "devices": devices or ["btn-fw"],
            "chunk_size": CHUNK,
        }
        cid, data = self.platform.command(GW, "firmware.update", args)
        self.platform.send(GW, data)
        return wait_rec(self.col, "cmd.result", lambda d: d["id"] == cid)

    def result(self, image_id: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_rec(self.col, "fw.result", lambda d: d["image_id"] == image_id, timeout)

    def stop(self) -> None:
        self.gw.kill()
        self.col.stop()
        self.platform.stop()
        self.device.stop()
        self.gnss.unplug()


@pytest.fixture
def rig(broker: Mosquitto, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(broker, tmp_path)
    r.start()
    yield r
    r.stop()


def test_update_end_to_end_with_progress(rig: Rig) -> None:
    data = image("1.5.0")
    res = rig.update(rig.platform.manifest(data), "img-150")
    assert res["ok"] and res["accepted"] == ["btn-fw"] and res["next_chunk"] == 0
    rig.platform.chunks(GW, "img-150", data, CHUNK)
    result = rig.result("img-150")
    assert result["ok"] is True and result["version"] == "1.5.0", result
    assert result["worker"] == "w-1"  # a record about a worker's kit names the worker
    assert rig.device.slots[0].version == "1.5.0" and rig.device.slots[0].confirmed
    # progress is bulk: it may trail the result (it waits for a group commit)
    wait_rec(rig.col, "fw.progress", lambda p: p["phase"] == "upload" and p["done"] == len(data))
    progress = recs(rig.col, "fw.progress")
    assert any(p["phase"] == "download" and p["received"] == len(data) for p in progress)
    assert all(m.payload["prio"] == 3 for m in rig.col.up("fw.progress"))
    assert rig.col.up("fw.result")[0].payload["prio"] == 1
    # a confirmed version is a floor: nothing older may follow it (min_version was 1.0.0)
    assert rig.gw.status()["firmware"]["floors"] == {"sos-button-v2": "1.5.0"}


def test_download_resumes_after_a_gateway_kill(rig: Rig) -> None:
    data = image("1.5.0", 20_000)
    rig.update(rig.platform.manifest(data), "img-resume")
    rig.platform.chunks(GW, "img-resume", data, CHUNK, stop=8)
    rig.gw.wait_status(lambda d: d["firmware"]["jobs"]["img-resume"]["received"] >= 8 * CHUNK)
    rig.gw.kill()
    rig.gw.start()
    # at start the gateway says where it stands, so the platform resumes there
    resume = wait_rec(
        rig.col, "fw.progress", lambda d: d.get("next_chunk", 0) >= 8 and d["image_id"] == "img-resume"
    )
    rig.platform.chunks(GW, "img-resume", data, CHUNK, start=resume["next_chunk"])
    result = rig.result("img-resume")
    assert result["ok"] is True, result
    assert rig.device.slots[0].hash == __import__("hashlib").sha256(data).digest()


def test_every_bad_update_is_rejected_reported_and_the_old_firmware_stays(rig: Rig) -> None:
    p = rig.platform
    good = image("1.5.0")

    def rejected(manifest: bytes, image_id: str, code: str) -> None:
        res = rig.update(manifest, image_id)
        assert res["ok"] is False and res["error"] == code, res
        assert rig.result(image_id)["reason"] == code

    unsigned = cbor2.dumps({"v": 1, "device_class": "sos-button-v2", "version": "9.9.9", "size": len(good)})
    rejected(unsigned, "unsigned", "bad_signature")
    rejected(p.manifest(good, signer=p.signer), "by-command-key", "bad_signature")  # the command key
    rejected(
        p.manifest(good, signer=Signer(load_private_key(rig.gw.key.read_bytes()))),
        "by-gw-key",
        "bad_signature",
    )
    rejected(p.manifest(good, device_class="body-camera-v1"), "other-class", "wrong_class")
    rejected(p.manifest(good, not_after=int(time.time() * 1000) - 60_000), "expired", "expired")
    # older and same version: accepted on paper, refused once the device says what it runs
    for version, image_id in (("1.4.1", "older"), ("1.4.2", "same")):
        data = image(version)
        assert rig.update(p.manifest(data, version=version), image_id)["ok"]
        p.chunks(GW, image_id, data, CHUNK)
        assert rig.result(image_id)["reason"] == "rollback"
    # a flipped bit, chunks of two images mixed: the digest says no; longer than declared
    # (a size that lies downward) or an endless stream: cut at the declared size; a size
    # that lies upward: the short last chunk gives it away; a stream that stops: timeout
    flipped = bytearray(good)
    flipped[5000] ^= 0x04
    other = image("1.5.0")
    mixed = b"".join((good if (i // CHUNK) % 2 else other)[i : i + CHUNK] for i in range(0, len(good), CHUNK))
    endless = good + os.urandom(50 * CHUNK)
    for image_id, manifest, sent, reason in (
        ("flipped", p.manifest(good), bytes(flipped), "digest"),
        ("mixed", p.manifest(good), mixed, "digest"),
        ("size-lies-down", p.manifest(good, size=len(good) - CHUNK), good, "size"),
        ("endless", p.manifest(good), endless, "size"),
        ("size-lies-up", p.manifest(good, size=len(good) + 5 * CHUNK), good, "size"),
        ("stalled", p.manifest(good), good[: 3 * CHUNK], "timeout"),
    ):
        assert rig.update(manifest, image_id)["ok"]
        p.chunks(GW, image_id, sent, CHUNK)
        assert rig.result(image_id)["reason"] == reason, image_id
    doc = rig.gw.wait_status(lambda d: d["firmware"]["jobs"] == {})
    assert doc["firmware"]["rejected_chunks"] >= 40  # the endless tail, counted and dropped
    assert list((rig.gw.state / "firmware" / "images").iterdir()) == []  # nothing of them kept
    assert (
        rig.device.slots[0].version == "1.4.2" and rig.device.resets == 0
    )  # the old firmware is still there


def test_security_floor_holds_across_a_restart(rig: Rig) -> None:
    p = rig.platform
    newer = image("1.7.0")
    assert rig.update(p.manifest(newer, version="1.7.0", min_version="1.7.0"), "floor-setter")["ok"]
    rig.gw.kill()
    rig.gw.start()
    rig.gw.wait_status(lambda d: d["link"]["state"] == "up")
    res = rig.update(p.manifest(image("1.6.0"), version="1.6.0"), "below-floor")
    assert res["ok"] is False and res["error"] == "rollback", res
    assert rig.gw.status()["firmware"]["floors"] == {"sos-button-v2": "1.7.0"}


def test_update_over_ble_through_the_wearables_own_link(broker: Mosquitto, tmp_path: Path) -> None:
    """No serial port: the image goes over the SMP GATT service of the simulated button,
    through the connection the wearables driver already holds (the bleak seam)."""
    from tests.support.wearables import SimProc, button, devices_toml

    spec = {**button("btn-ble", 1), "smp": {"running": "1.4.2"}, "fw_class": "sos-button-v2"}
    sim = SimProc(tmp_path / "sim", [spec])
    platform = FirmwarePlatform(tmp_path / "platform", broker.port)
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        gw_id=GW,
        extra=(
            f'[trust]\ncommand_key = "{platform.pub_path}"\nfirmware_key = "{platform.fw_pub_path}"\n'
            "[firmware]\nsmp_timeout_s = 3.0\nreboot_wait_s = 20.0\n" + sim.ble_config()
        ),
        devices=devices_toml([spec]),
    )
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    try:
        assert sim.call("connected", device="btn-ble", timeout=20)["connected"]
        data = image("1.5.0", 20_000)
        args = {
            "manifest": platform.manifest(data),
            "image_id": "img-ble",
            "devices": ["btn-ble"],
            "chunk_size": CHUNK,
        }
        cid, cmd = platform.command(GW, "firmware.update", args)
        platform.send(GW, cmd)
        assert wait_rec(col, "cmd.result", lambda d: d["id"] == cid)["ok"]
        platform.chunks(GW, "img-ble", data, CHUNK)
        result = wait_rec(col, "fw.result", lambda d: d["image_id"] == "img-ble", timeout=90)
        fw = sim.call("state")["wearables"]["btn-ble"]["firmware"]
    finally:
        gw.kill()
        col.stop()
        platform.stop()
        sim.stop()
    assert result["ok"] is True and result["version"] == "1.5.0", result
    assert fw["running"] == "1.5.0" and fw["confirmed"] and fw["resets"] == 1
    # the button rebooted into the new image and the gateway reconnected it
    states = [d["state"] for d in recs(col, "device.state") if d.get("state")]
    assert states.count("connected") >= 2


def test_gridedge_platform_pushes_a_whole_update_through_a_gateway_restart(
    rig: Rig, broker: Mosquitto, tmp_path: Path
) -> None:
    """The platform's own tool does what a platform must: signs the manifest with the
    firmware key and the command with the command key, sends the chunks from where the
    gateway says it stands, and, when the gateway restarts mid-download, carries on until
    the device runs the new image, checked by the gateway's signed result."""
    data = image("1.5.0", 60_000)
    (tmp_path / "app.bin").write_bytes(data)
    manifest = subprocess.run(
        [sys.executable, "-m", "tools.cli", "platform", "manifest", "--key", str(rig.platform.fw_key_path),
         "--image", str(tmp_path / "app.bin"), "--device-class", "sos-button-v2", "--version", "1.5.0",
         "--min-version", "1.0.0", "--out", str(tmp_path / "app.manifest")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert manifest.returncode == 0, manifest.stderr
    push = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "platform", "firmware", "--key", str(rig.platform.key_path),
         "--to", GW, "--manifest", str(tmp_path / "app.manifest"), "--image", str(tmp_path / "app.bin"),
         "--image-id", "img-tool", "--devices", "btn-fw", "--chunk-size", str(CHUNK),
         "--host", "127.0.0.1", "--port", str(broker.port), "--gateway-pub", str(rig.gw.pub),
         "--timeout", "120"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        rig.gw.wait_status(
            lambda d: d["firmware"]["jobs"].get("img-tool", {}).get("received", 0) >= 8 * CHUNK
        )
        rig.gw.kill()
        rig.gw.start()
        out, err = push.communicate(timeout=150)
    finally:
        if push.poll() is None:
            push.kill()
    assert push.returncode == 0, (out, err)
    done = json.loads(out.strip().splitlines()[-1])
    assert done["result"]["accepted"] == ["btn-fw"]
    assert done["results"]["btn-fw"]["ok"] is True and done["results"]["btn-fw"]["version"] == "1.5.0"
    # the person waiting saw each report as it came (progress is bulk: it may trail the result)
    assert '"kind": "cmd.result"' in err and '"kind": "fw.result"' in err
    assert rig.device.slots[0].hash == hashlib.sha256(data).digest()
