"""The real thing: Zephyr's SMP server with MCUboot (pinned, from the smpclient source
package on PyPI, checked against its SHA256SUMS) in qemu-system-arm, its UART bridged
to a pty; the gateway's flasher uploads the signed image over it with the cable pulled
mid-transfer, the device's slot 1 then shows the image's hash, and a reset works."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from smpclient.transport.serial import SMPSerialTransport

from firmware_bridge.smp import Flasher, slot_hash
from tests.support.zephyr import ZephyrBoard, smp_server_fixtures


@pytest.mark.slow
def test_signed_image_to_the_real_bootloader_with_the_link_cut(tmp_path: Path) -> None:
    try:
        fixtures = smp_server_fixtures()
    except Exception as exc:  # the sdist could not be fetched or verified: that is a failure here
        pytest.fail(f"cannot fetch the Zephyr SMP server fixtures: {exc}")
    board = ZephyrBoard(fixtures, "serial_recovery_buf2048", tmp_path / "ttyZEPHYR")
    image = board.signed.read_bytes()
    expected = slot_hash(board.signed)
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
