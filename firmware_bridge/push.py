"""`gridedge firmware push`: a technician on site flashes one wearable from a laptop or the
gateway itself, with the same checks as an update from the platform and a progress bar.

Checks, in order: the manifest against `[trust] firmware_key` and the device's `fw_class`,
the security floor, expiry (when the clock is trustworthy), the image against the
manifest's size and SHA-256; then the SMP flash (which refuses a version that is not
newer than the device's). Exit 0 when the device runs and confirmed the new version.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from pathlib import Path
from typing import TextIO

from smpclient.transport.serial import SMPSerialTransport

from firmware_bridge.manifest import ManifestRejected, check, show
from firmware_bridge.smp import Flasher
from firmware_bridge.store import floors_for
from floor.clock import Clock
from floor.config import Config
from floor.envelope import load_public_key
from floor.errors import N_, ConfigError
from floor.registry import Registry


class Bar:
    """A one-line progress bar on a terminal (plain lines when it is not one)."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.start = time.monotonic()
        self.last = -1

    def __call__(self, done: int, size: int) -> None:
        pct = 100 * done // max(1, size)
        if pct == self.last:
            return
        self.last = pct
        rate = done / max(1e-6, time.monotonic() - self.start) / 1024
        line = f"[{'#' * (pct // 5):<20}] {pct:3d}%  {done}/{size} bytes  {rate:.1f} KiB/s"
        if self.out.isatty():
            self.out.write("\r" + line)
            if done >= size:
                self.out.write("\n")
        elif pct % 10 == 0 or done >= size:
            self.out.write(line + "\n")
        self.out.flush()


def push(cfg: Config, manifest_path: Path, image_path: Path, device: str, out: TextIO = sys.stdout) -> int:
    if cfg.trust.firmware_key is None:
        raise ConfigError("trust.firmware_key", N_("is required to check a firmware manifest"))
    key = load_public_key(cfg.trust.firmware_key.read_bytes())
    registry = Registry(cfg.gateway.state_dir / "devices.json", cfg.parts.wearables, seed=cfg.wearables)
    w = registry.devices.get(device) or next((x for x in cfg.wearables if x.id == device), None)
    if w is None:
        print(f"firmware push: no wearable {device!r} in {cfg.file}", file=sys.stderr)
        return 2
    if w.fw_class is None or w.smp_port is None:
        print(f"firmware push: {device} needs fw_class and smp_port in {cfg.file}", file=sys.stderr)
        return 2
    floors = floors_for(cfg.gateway.state_dir, cfg.firmware.floor_mirror)
    clock = Clock()
    try:
        m = check(
            manifest_path.read_bytes(),
            firmware_key=key,
            device_class=w.fw_class,
            running=None,
            floor=floors.get(w.fw_class),
            now_ms=clock.unix_ms() if clock.trusted else None,
            max_size=cfg.firmware.max_bytes,
        )
    except ManifestRejected as exc:
        print(f"firmware push: manifest rejected: {exc}", file=out)
        return 1
    image = image_path.read_bytes()
    if len(image) != m.size:
        print(f"firmware push: size: the image is {len(image)} bytes, the manifest says {m.size}", file=out)
        return 1
    if hashlib.sha256(image).digest() != m.sha256:
        print("firmware push: digest: the image's SHA-256 does not match the manifest", file=out)
        return 1
    version = show(m.version)
    print(
        f"firmware push: {device} ({w.fw_class}) <- {image_path.name} {version} over {w.smp_port}", file=out
    )
    flasher = Flasher(
        SMPSerialTransport,
        w.smp_port,
        timeout_s=cfg.firmware.smp_timeout_s,
        reboot_wait_s=cfg.firmware.reboot_wait_s,
        progress=Bar(),
    )
    res = asyncio.run(flasher.flash(image, version))  # the bytes checked above, not the file again
    if res.ok:
        floors.raise_to(m.device_class, m.min_version)
        print(f"firmware push: ok, {device} runs {res.version} (confirmed)", file=out)
        return 0
    print(f"firmware push: failed: {res.reason}: {res.detail}", file=out)
    return 1
