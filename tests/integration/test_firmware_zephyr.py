"""The real thing: Zephyr's SMP server with MCUboot (pinned, from the smpclient source
package on PyPI, checked against its SHA256SUMS) in qemu-system-arm, its UART bridged
to a pty; the gateway's flasher uploads the signed image over it with the cable pulled
mid-transfer, the device's slot 1 then shows the image's hash, and a reset works."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from smpclient.transport.serial import SMPSerialTransport

from firmware_bridge.smp import Flasher, slot_hash
from tests.support.broker import Mosquitto
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc
from tests.support.platform import FirmwarePlatform
from tests.support.zephyr import ZephyrBoard, smp_server_fixtures, with_version


@pytest.mark.slow
def test_signed_image_to_the_real_bootloader_with_the_link_cut(tmp_path: Path) -> None:
    try:
        fixtures = smp_server_fixtures()
    except Exception as exc:  # the sdist could not be fetched or verified: that is a failure here
        pytest.fail(f"cannot fetch the Zephyr SMP server fixtures: {exc}")
    board = ZephyrBoard(fixtures, "serial_recovery_buf2048", tmp_path / "ttyZEPHYR")
    image = board.signed.read_bytes()
    expected = slot_hash(image)
    offsets: list[int] = []

    def progress(off: int, size: int) -> None:
        offsets.append(off)
        if board.cuts == 0 and off > size // 3:
            board.cut(0.5)  # the cable is pulled a third of the way through

    flasher = Flasher(SMPSerialTransport, str(board.link), timeout_s=3.0, attempts=6, progress=progress)

    async def run() -> tuple[int, list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        resumed = await flasher.transfer(image)
        client = await flasher.client(10)
        try:
            after_upload = [(s.slot, bytes(s.hash)) for s in await flasher.states(client)]
            await flasher.reset(client)
        finally:
            await client.disconnect()
        await asyncio.sleep(1.0)
        client = await flasher.client(10)  # back after the reset
        try:
            after_reset = [(s.slot, bytes(s.hash)) for s in await flasher.states(client)]
        finally:
            await client.disconnect()
        return resumed, after_upload, after_reset

    try:
        resumed, after_upload, after_reset = asyncio.run(run())
    finally:
        board.stop()
    assert board.cuts == 1 and resumed >= 1
    assert offsets[-1] == len(image) and offsets == sorted(offsets)
    assert (1, expected) in after_upload, after_upload  # slot 1 holds the uploaded image
    assert after_reset and after_reset[0][0] == 0  # the device came back and answers


@pytest.mark.slow
def test_update_from_the_broker_to_the_real_bootloader_with_the_link_cut(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The platform signs a manifest for a newer build of the board's application; the
    gateway takes the image from a real mosquitto, flashes it over the pty with the
    cable pulled mid-upload, MCUboot boots it, and the gateway confirms it."""
    fixtures = smp_server_fixtures()
    board = ZephyrBoard(fixtures, "serial_recovery_buf2048", tmp_path / "ttyZEPHYR")
    image = with_version(board.signed.read_bytes(), 0, 0, 1)
    platform = FirmwarePlatform(tmp_path / "platform", broker.port)
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        gw_id="gw-zephyr",
        extra=(
            f'[trust]\ncommand_key = "{platform.pub_path}"\nfirmware_key = "{platform.fw_pub_path}"\n'
            "[firmware]\nsmp_timeout_s = 3.0\nreboot_wait_s = 30.0\n"
        ),
        devices=(
            '[[devices]]\nid = "board-1"\nkind = "body_camera"\nworker = "w-1"\n'
            'address = "F1:00:00:00:00:01"\n'
            f'fw_class = "mps2-smp-server"\nsmp_port = "{board.link}"\n'
        ),
    )
    col = Collector(broker.port, gw.pub).start()
    gw.start()
    try:
        gw.wait_status(lambda d: d["link"]["state"] == "up")
        manifest = platform.manifest(
            image, device_class="mps2-smp-server", version="0.0.1", min_version="0.0.0"
        )
        args = {"manifest": manifest, "image_id": "zephyr-001", "devices": ["board-1"], "chunk_size": 4096}
        cid, cmd = platform.command("gw-zephyr", "firmware.update", args)
        platform.send("gw-zephyr", cmd)
        col.wait_for(
            lambda _ms: any(d["id"] == cid and d["ok"] for d in _recs(col, "cmd.result")), timeout=20
        )
        platform.chunks("gw-zephyr", "zephyr-001", image, 4096)
        # pull the cable once the upload to the board is under way
        col.wait_for(
            lambda _ms: any(
                d.get("phase") == "upload" and d.get("done", 0) > 0 for d in _recs(col, "fw.progress")
            ),
            timeout=60,
        )
        board.cut(0.5)
        col.wait_for(lambda _ms: bool(_recs(col, "fw.result")), timeout=180)
    finally:
        gw.kill()
        col.stop()
        platform.stop()
        board.stop()
    (result,) = _recs(col, "fw.result")
    assert result["ok"] is True and result["version"] == "0.0.1", result
    assert result["resumed"] >= 1 and board.cuts == 1


def _recs(col: Collector, kind: str) -> list[dict[str, Any]]:
    return [r["d"] for m in col.up(kind) for r in m.payload["recs"]]
