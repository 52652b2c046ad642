"""Shared fixtures: a real mosquitto per test, pty devices, the gateway as a process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bluezoo import BlueZoo
from tests.support.broker import Mosquitto, mosquitto_bin
from tests.support.gateway import CORPORA
from tests.support.smallfs import mount_tmpfs, umount


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if mosquitto_bin() is None:
        pytest.fail("mosquitto is not installed; scripts/test installs it (apt-get install mosquitto)")
    b = Mosquitto(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def fast_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that does not save to disk on every message (for throughput and latency)."""
    if mosquitto_bin() is None:
        pytest.fail("mosquitto is not installed; scripts/test installs it (apt-get install mosquitto)")
    b = Mosquitto(tmp_path / "fast-broker", durable=False)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real ENOSPC, not a simulated one."""
    mnt = tmp_path / "small"
    mount_tmpfs(mnt, "4m")
    try:
        yield mnt
    finally:
        umount(mnt)


@pytest.fixture
def corpora() -> Path:
    if not CORPORA.is_dir():
        pytest.skip(f"shared corpora not present at {CORPORA}")
    return CORPORA


@pytest.fixture
def zoo(tmp_path: Path) -> Iterator[BlueZoo]:
    """A user-space BlueZ (BlueZoo) with two adapters on a private system bus."""
    z = BlueZoo(tmp_path / "bluezoo", adapters=2)
    try:
        yield z
    finally:
        z.stop()
