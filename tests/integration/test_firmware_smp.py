"""Flashing with MCUmgr SMP (smpclient) over serial, against a Python SMP device on a pty."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from smpclient.transport.serial import SMPSerialTransport

from firmware_bridge.reasons import FlashResult
from firmware_bridge.smp import Flasher
from tests.support.smp_device import SmpDevice


def image(version: str, size: int = 30_000) -> bytes:
    return f"VER={version};".encode() + os.urandom(size)


def flash(dev: SmpDevice, data: bytes, version: str) -> tuple[FlashResult, list[int]]:
    offsets: list[int] = []
    path = dev.link.with_name("image.bin")
    path.write_bytes(data)
    flasher = Flasher(
        SMPSerialTransport,
        str(dev.link),
        timeout_s=2.0,
        reboot_wait_s=5.0,
        progress=lambda o, _n: offsets.append(o),
    )
    return asyncio.run(flasher.flash(path.read_bytes(), version)), offsets


def test_full_update(tmp_path: Path) -> None:
    dev = SmpDevice(tmp_path / "ttySMP")
    try:
        data = image("1.5.0")
        res, offsets = flash(dev, data, "1.5.0")
    finally:
        dev.stop()
    assert res.ok and res.version == "1.5.0", res
    assert offsets == sorted(offsets) and offsets[-1] == len(data) and len(offsets) > 10  # progress
    assert dev.slots[0].version == "1.5.0" and dev.slots[0].confirmed  # confirmed only after it came back
    assert dev.slots[0].hash == hashlib.sha256(data).digest()
    assert dev.slots[1].version == "1.4.2" and dev.resets == 1


def test_upload_resumes_from_the_device_offset_after_the_link_breaks(tmp_path: Path) -> None:
    dev = SmpDevice(tmp_path / "ttySMP", cut_after=20)
    try:
        data = image("1.5.0", 60_000)
        res, offsets = flash(dev, data, "1.5.0")
    finally:
        dev.stop()
    assert res.ok and res.resumed >= 1 and dev.cuts == 1, res
    # the second connection went on from where the device was, not from zero: the
    # offsets never go back, and no chunk was sent twice (the cut one and the probe aside)
    assert offsets == sorted(offsets) and offsets[-1] == len(data)
    assert dev.requests <= len(offsets) + 2
    assert dev.slots[0].version == "1.5.0" and dev.slots[0].hash == hashlib.sha256(data).digest()


def test_a_device_that_refuses(tmp_path: Path) -> None:
    dev = SmpDevice(tmp_path / "ttySMP", refuse=True)
    try:
        res, _ = flash(dev, image("1.5.0"), "1.5.0")
    finally:
        dev.stop()
    assert not res.ok and res.reason == "device_refused", res
    assert dev.slots[0].version == "1.4.2" and dev.resets == 0  # old firmware still there


def test_a_device_that_comes_back_on_the_old_version(tmp_path: Path) -> None:
    dev = SmpDevice(tmp_path / "ttySMP", comes_back_old=True)
    try:
        res, _ = flash(dev, image("1.5.0"), "1.5.0")
    finally:
        dev.stop()
    assert not res.ok and res.reason == "did_not_come_back" and res.version == "1.4.2", res
    assert dev.slots[0].version == "1.4.2" and dev.slots[0].confirmed  # nothing confirmed; MCUboot reverted
