"""`gridedge firmware push`: a technician flashes one wearable on site, same checks, a progress bar."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor.envelope import Signer, load_private_key
from tests.support.gateway import REPO, write_keypair
from tests.support.smp_device import SmpDevice


def setup(tmp_path: Path) -> tuple[Path, Signer, SmpDevice]:
    dev = SmpDevice(tmp_path / "ttySMP", running="1.4.2")
    gw_key, _ = write_keypair(tmp_path, "gateway")
    fw_key, fw_pub = write_keypair(tmp_path, "firmware")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw-site"\nkey = "{gw_key}"\nstate_dir = "state"\n'
        f'[trust]\nfirmware_key = "{fw_pub}"\n[firmware]\nsmp_timeout_s = 2.0\nreboot_wait_s = 10.0\n'
        '[[devices]]\nid = "btn-9"\nkind = "sos_button"\nworker = "w-9"\naddress = "F0:00:00:00:00:09"\n'
        f'fw_class = "sos-button-v2"\nsmp_port = "{dev.link}"\nkey = "0123456789abcdef0123456789abcdef"\n'
    )
    return cfg, Signer(load_private_key(fw_key.read_bytes())), dev


def manifest(signer: Signer, image: bytes, version: str = "1.5.0") -> bytes:
    return signer.sign(
        {
            "v": 1,
            "device_class": "sos-button-v2",
            "version": version,
            "size": len(image),
            "sha256": hashlib.sha256(image).digest(),
            "min_version": "1.0.0",
            "not_after": int(time.time() * 1000) + 3_600_000,
        }
    )


def push(cfg: Path, m: bytes, image: bytes, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "m.cose").write_bytes(m)
    (tmp_path / "fw.bin").write_bytes(image)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "firmware",
            "push",
            "-c",
            str(cfg),
            "--manifest",
            str(tmp_path / "m.cose"),
            "--image",
            str(tmp_path / "fw.bin"),
            "--device",
            "btn-9",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_push_flashes_with_progress(tmp_path: Path) -> None:
    cfg, signer, dev = setup(tmp_path)
    image = b"VER=1.5.0;" + os.urandom(20_000)
    try:
        res = push(cfg, manifest(signer, image), image, tmp_path)
    finally:
        dev.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok, btn-9 runs 1.5.0 (confirmed)" in res.stdout
    assert "100%" in res.stderr and "[####" in res.stderr  # the progress bar
    assert dev.slots[0].version == "1.5.0" and dev.slots[0].confirmed


def test_push_refuses_what_the_platform_did_not_sign_for_this_device(tmp_path: Path) -> None:
    cfg, signer, dev = setup(tmp_path)
    image = b"VER=1.5.0;" + os.urandom(5_000)
    flipped = bytearray(image)
    flipped[100] ^= 1
    stranger = Signer(Ed25519PrivateKey.generate())
    try:
        cases = [
            (push(cfg, manifest(stranger, image), image, tmp_path), "bad_signature"),
            (push(cfg, manifest(signer, image), bytes(flipped), tmp_path), "digest"),
            (push(cfg, manifest(signer, image + b"x"), image, tmp_path), "size"),
        ]
        old = b"VER=1.4.0;" + os.urandom(5_000)
        cases.append((push(cfg, manifest(signer, old, "1.4.0"), old, tmp_path), "rollback"))
    finally:
        dev.stop()
    for res, reason in cases:
        assert res.returncode == 1 and reason in res.stdout, res.stdout + res.stderr
    assert dev.slots[0].version == "1.4.2" and dev.resets == 0 and dev.requests == 0
