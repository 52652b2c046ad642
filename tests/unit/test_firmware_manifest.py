"""Firmware manifests and the image store: every bad update is refused with its reason."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_bridge.manifest import ManifestRejected, check, parse_version
from firmware_bridge.store import ChunkRejected, Floors, ImageStore
from floor.envelope import Signer

FW = Ed25519PrivateKey.generate()
CMD = Ed25519PrivateKey.generate()
GW = Ed25519PrivateKey.generate()
IMAGE = os.urandom(10_000)
NOW = 1_795_000_000_000


def manifest(key: Ed25519PrivateKey = FW, image: bytes = IMAGE, **over: Any) -> bytes:
    payload = {
        "v": 1,
        "device_class": "sos-button-v2",
        "version": "1.5.0",
        "size": len(image),
        "sha256": hashlib.sha256(image).digest(),
        "min_version": "1.2.0",
        "not_after": NOW + 86_400_000,
        **over,
    }
    return Signer(key).sign(payload)


def ok(signed: bytes, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "firmware_key": FW.public_key(),
        "device_class": "sos-button-v2",
        "running": (1, 4, 2),
        "floor": (1, 2, 0),
        "now_ms": NOW,
        "max_size": 1 << 20,
        **kw,
    }
    return check(signed, **args)


def reason(signed: Any, **kw: Any) -> str:
    with pytest.raises(ManifestRejected) as err:
        ok(signed, **kw)
    return str(err.value.reason)


def test_a_good_manifest() -> None:
    m = ok(manifest())
    assert m.version == (1, 5, 0) and m.size == len(IMAGE) and m.min_version == (1, 2, 0)


def test_attacks_on_the_manifest() -> None:
    unsigned = cbor2.dumps({"v": 1, "device_class": "sos-button-v2", "version": "9.9.9"})
    assert reason(unsigned) == "bad_signature"
    assert reason(manifest(CMD)) == "bad_signature"  # the command key is not the firmware key
    assert reason(manifest(GW)) == "bad_signature"
    flipped = bytearray(manifest())
    flipped[-5] ^= 1
    assert reason(bytes(flipped)) == "bad_signature"
    assert reason(manifest(device_class="body-camera-v1")) == "wrong_class"
    assert reason(manifest(version="1.4.1")) == "rollback"  # older than the running 1.4.2
    assert reason(manifest(version="1.4.2")) == "rollback"  # the same again
    assert reason(manifest(version="1.5.0"), floor=(1, 6, 0), running=None) == "rollback"
    assert reason(manifest(not_after=NOW - 1)) == "expired"
    assert ok(manifest(not_after=NOW - 1), now_ms=None).version == (1, 5, 0)  # clock not trusted
    assert reason(manifest(), max_size=100) == "size"
    assert reason(manifest(version="1.5")) == "malformed"
    assert reason(manifest(version="1.5.0-rc1")) == "malformed"
    assert reason(manifest(sha256=b"short")) == "malformed"
    assert reason(manifest(min_version="2.0.0")) == "malformed"
    assert reason("not bytes") == "malformed"
    assert reason(b"\xff" * 100) == "bad_signature"


def test_floor_survives_a_restart_and_a_restored_backup(tmp_path: Path) -> None:
    state, mirror = tmp_path / "state" / "firmware" / "floor.json", tmp_path / "etc" / "floor.json"
    floors = Floors([state, mirror])
    floors.raise_to("sos-button-v2", (1, 6, 0))
    old_backup = state.read_bytes()
    floors.raise_to("sos-button-v2", (1, 7, 0))
    state.write_bytes(old_backup)  # the state dir restored from an older backup
    again = Floors([state, mirror])
    assert again.get("sos-button-v2") == (1, 7, 0)
    assert reason(manifest(version="1.6.5"), floor=again.get("sos-button-v2"), running=None) == "rollback"
    floors.raise_to("sos-button-v2", (1, 0, 0))  # never lowered
    assert Floors([state]).get("sos-button-v2") == (1, 7, 0)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_download_hashes_resumes_and_keeps_private(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "firmware", max_bytes=1 << 20)
    assert (tmp_path / "firmware").stat().st_mode & 0o077 == 0
    m = ok(manifest())
    dl = store.begin("img1", m, 1024)
    parts = chunks(IMAGE, 1024)
    for n in range(4):
        assert dl.put(n, parts[n]) is False
    assert dl.put(2, parts[2]) is False  # a repeat is ignored
    with pytest.raises(ChunkRejected, match="gap"):
        dl.put(7, parts[7])
    # the gateway restarts: the download resumes from what is on disk
    dl = store.begin("img1", m, 1024)
    assert dl.next_chunk == 4
    for n in range(4, len(parts)):
        done = dl.put(n, parts[n])
    assert done and dl.done() and dl.final.read_bytes() == IMAGE
    assert store.begin("img1", m, 1024).done()  # and stays done


def test_bad_images_are_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "firmware", max_bytes=1 << 20)
    m = ok(manifest())
    # a flipped bit
    bad = bytearray(IMAGE)
    bad[5000] ^= 0x10
    dl = store.begin("flip", m, 1000)
    with pytest.raises(ChunkRejected, match="digest"):
        for n, c in enumerate(chunks(bytes(bad), 1000)):
            dl.put(n, c)
    assert not dl.part.exists() and not dl.final.exists()
    # chunks of two images mixed
    other = os.urandom(len(IMAGE))
    dl = store.begin("mixed", m, 1000)
    with pytest.raises(ChunkRejected, match="digest"):
        for n, (a, b) in enumerate(zip(chunks(IMAGE, 1000), chunks(other, 1000), strict=True)):
            dl.put(n, a if n % 2 else b)
    # longer than declared, and an endless stream: cut off at the declared size
    dl = store.begin("long", m, 1000)
    endless = chunks(IMAGE + os.urandom(50_000), 1000)
    with pytest.raises(ChunkRejected, match="size"):
        for n, c in enumerate(endless):
            dl.put(n, c)
    assert dl.received == len(IMAGE) and dl.done()  # the declared image itself was fine
    # a manifest whose digest matches the image but whose size lies (shorter)
    liar = ok(manifest(size=len(IMAGE) - 1000))
    dl = store.begin("liar", liar, 1000)
    with pytest.raises(ChunkRejected, match="digest"):
        for n, c in enumerate(chunks(IMAGE, 1000)):
            dl.put(n, c)
    # the disk the store may use is bounded
    small = ImageStore(tmp_path / "small", max_bytes=len(IMAGE) - 1)
    with pytest.raises(ChunkRejected, match="size"):
        small.begin("big", m, 1000)


def test_versions() -> None:
    assert parse_version("10.0.3") == (10, 0, 3)
    for bad in ("1.2", "01.2.3", "1.2.3.4", "v1.2.3", 123, None):
        with pytest.raises(ValueError):
            parse_version(bad)


def test_a_partial_image_resumes_only_for_the_manifest_it_was_started_for(tmp_path: Path) -> None:
    """The same image_id reused for another image (or a stale .part from an old job):
    its bytes are not the start of the new one."""
    store = ImageStore(tmp_path / "firmware", max_bytes=1 << 20)
    parts = chunks(IMAGE, 1024)
    first = store.begin("img", ok(manifest()), 1024)
    for n in range(3):
        first.put(n, parts[n])
    assert store.begin("img", ok(manifest()), 1024).next_chunk == 3  # the same manifest: resumed
    other = os.urandom(len(IMAGE))
    again = store.begin("img", ok(manifest(image=other)), 1024)
    assert again.next_chunk == 0  # another digest: started over
    for n, piece in enumerate(chunks(other, 1024)):
        done = again.put(n, piece)
    assert done and again.final.read_bytes() == other
