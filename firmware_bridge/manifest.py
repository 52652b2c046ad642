"""Firmware manifests (sans-IO): what the platform signed for a device class, checked
before any byte of an image reaches a wearable.

A manifest is a COSE_Sign1 (Ed25519) signed with the `[trust] firmware_key` whose
payload is the CBOR map `{"v": 1, "device_class", "version", "size", "sha256",
"min_version", "not_after"}`. `check` refuses, with one reason code each: a bad or
foreign signature (the command key and the gateway's own key are foreign), a
malformed payload, another device class, a version not above what the device runs,
a version below the persisted security floor, an expired manifest (only when the
clock is trustworthy), an image larger than the gateway will hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_bridge.reasons import FwReason
from floor.envelope import keyring, verify
from floor.errors import EnvelopeError

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 4096
_SEMVER = re.compile(r"(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})")
Version = tuple[int, int, int]


class ManifestRejected(Exception):
    """A manifest the gateway will not act on; `reason` is the fw.result code."""

    def __init__(self, reason: FwReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def parse_version(text: Any) -> Version:
    """`MAJOR.MINOR.PATCH` (no pre-release or build suffix: firmware ordering must be total)."""
    if not isinstance(text, str) or (m := _SEMVER.fullmatch(text)) is None:
        raise ValueError(f"not a MAJOR.MINOR.PATCH version: {text!r}")
    return int(m[1]), int(m[2]), int(m[3])


def show(v: Version) -> str:
    return ".".join(map(str, v))


@dataclass(frozen=True, slots=True)
class Manifest:
    device_class: str
    version: Version
    size: int
    sha256: bytes
    min_version: Version
    not_after: int | None  # unix ms; None: never expires
    signed: bytes  # the COSE_Sign1 as received (kept with the image)


def _payload(p: Any) -> Manifest:
    if not isinstance(p, dict) or p.get("v") != MANIFEST_VERSION:
        raise ManifestRejected(FwReason.MALFORMED, "payload is not a version 1 manifest map")
    cls, size, digest, not_after = p.get("device_class"), p.get("size"), p.get("sha256"), p.get("not_after")
    if not isinstance(cls, str) or not 0 < len(cls) <= 64:
        raise ManifestRejected(FwReason.MALFORMED, "device_class")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ManifestRejected(FwReason.MALFORMED, "size")
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise ManifestRejected(FwReason.MALFORMED, "sha256 must be 32 bytes")
    if not_after is not None and (not isinstance(not_after, int) or isinstance(not_after, bool)):
        raise ManifestRejected(FwReason.MALFORMED, "not_after")
    try:
        version, floor = parse_version(p.get("version")), parse_version(p.get("min_version", "0.0.0"))
    except ValueError as exc:
        raise ManifestRejected(FwReason.MALFORMED, str(exc)) from None
    if floor > version:
        raise ManifestRejected(FwReason.MALFORMED, "min_version is above version")
    return Manifest(cls, version, size, digest, floor, not_after, b"")


def check(
    signed: Any,
    *,
    firmware_key: Ed25519PublicKey,
    device_class: str | None,
    running: Version | None,
    floor: Version | None,
    now_ms: int | None,
    max_size: int,
) -> Manifest:
    """Verify a manifest for one device; ManifestRejected names the first problem.

    `running` is the version the device reports (None: unknown, so only the floor
    applies); `device_class` None accepts any class (re-reading a manifest already
    checked against its targets); `floor` the persisted security floor for the class; `now_ms` the wall
    clock when it is trustworthy (gnss/ntp/rtc), else None and expiry is not judged.
    """
    if not isinstance(signed, bytes):
        raise ManifestRejected(FwReason.MALFORMED, "manifest must be bytes")
    try:
        verified = verify(signed, keyring(firmware_key), max_bytes=MAX_MANIFEST_BYTES)
    except EnvelopeError as exc:
        raise ManifestRejected(FwReason.BAD_SIGNATURE, str(exc)) from None
    m = _payload(verified.payload)
    if device_class is not None and m.device_class != device_class:
        raise ManifestRejected(FwReason.WRONG_CLASS, f"for {m.device_class}, device is {device_class}")
    if floor is not None and m.version < floor:
        raise ManifestRejected(
            FwReason.ROLLBACK, f"{show(m.version)} is below the security floor {show(floor)}"
        )
    if running is not None and m.version <= running:
        what = "the same version" if m.version == running else "older"
        raise ManifestRejected(
            FwReason.ROLLBACK, f"{show(m.version)} is {what} than the running {show(running)}"
        )
    if m.not_after is not None and now_ms is not None and now_ms > m.not_after:
        raise ManifestRejected(FwReason.EXPIRED, f"not_after {m.not_after} < now {now_ms}")
    if m.size > max_size:
        raise ManifestRejected(FwReason.SIZE, f"{m.size} bytes is more than the {max_size} the gateway holds")
    return Manifest(m.device_class, m.version, m.size, m.sha256, m.min_version, m.not_after, signed)
