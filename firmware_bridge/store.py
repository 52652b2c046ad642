"""Where firmware images arrive: a private directory, bounded, hashed while written,
resumable; and the security floor that makes a rollback impossible.

An image arrives in chunks (`{prefix}/{gw}/fw/{image_id}/{n}`, n from 0, each
`chunk_size` bytes but the last). `Download.put(n, data)` accepts a chunk only at
the next offset (a repeat is ignored, a gap is refused), never beyond the size the
manifest declared (an endless stream is cut off and reported), and hashes as it
writes. `done()` is true once exactly `size` bytes arrived whose SHA-256 matches;
a mismatch (a flipped bit, chunks of two images mixed, a size that lies) discards
the file. A restart resumes from the bytes already on disk.

The floor per device class is the highest `min_version` accepted and the highest
version confirmed on a device. It is kept in every path given (the state directory
and, for safety against restoring the state directory from an old backup, a second
place such as /etc or another partition) and read as the maximum of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from firmware_bridge.manifest import Manifest, Version, parse_version, show
from firmware_bridge.reasons import FwReason
from floor.fsutil import write_atomic

_IMAGE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_CHUNK = 64 * 1024


log = logging.getLogger(__name__)


class ChunkRejected(Exception):
    """A chunk not written. `ends_job`: the image itself is wrong (its digest, or more of it
    than declared once complete); otherwise only this chunk is refused and the platform
    may send it again."""

    def __init__(self, reason: FwReason, detail: str, *, ends_job: bool = True) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.ends_job = ends_job


class Download:
    """One image being received into `<dir>/<image_id>.part`."""

    def __init__(self, directory: Path, image_id: str, manifest: Manifest, chunk_size: int) -> None:
        if not _IMAGE_ID.fullmatch(image_id):
            raise ValueError("image_id must match [A-Za-z0-9._-]{1,64}")
        if not 0 < chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be 1..{MAX_CHUNK}")
        self.image_id = image_id
        self.manifest = manifest
        self.chunk_size = chunk_size
        self.part = directory / f"{image_id}.part"
        self.final = directory / f"{image_id}.bin"
        self.tag = directory / f"{image_id}.part.for"  # the digest the .part is being filled for
        self._hash = hashlib.sha256()
        self.received = 0
        if self.final.exists() and _digest(self.final) == manifest.sha256:
            self.received = manifest.size
            self._hash = hashlib.sha256(self.final.read_bytes())
            return
        # A .part is the image of the manifest it was started for: one left by another
        # update of the same image_id (another digest) is not resumed from.
        expected = manifest.sha256.hex()
        with contextlib.suppress(FileNotFoundError):
            if self.tag.read_text(encoding="ascii").strip() != expected:
                self.part.unlink(missing_ok=True)
        if self.part.exists() and not self.tag.exists():
            self.part.unlink()
        write_atomic(self.tag, expected.encode())
        with contextlib.suppress(FileNotFoundError):
            data = self.part.read_bytes()
            whole = len(data) - len(data) % chunk_size if len(data) < manifest.size else 0
            if whole != len(data):
                os.truncate(self.part, whole)  # a torn last chunk: fetch it again
            self.received = whole
            self._hash.update(data[:whole])

    @property
    def next_chunk(self) -> int:
        return self.received // self.chunk_size

    def done(self) -> bool:
        return self.final.exists() and self.received == self.manifest.size

    def put(self, n: int, data: bytes) -> bool:
        """Write chunk n; True when the image is complete and verified."""
        if self.done():
            if n < -(-self.manifest.size // self.chunk_size):
                return True  # a redelivery of a chunk we have
            raise ChunkRejected(FwReason.SIZE, f"chunk {n} is beyond the declared {self.manifest.size} bytes")
        if n < self.next_chunk:
            return False  # a repeat (after a resume or a QoS 1 redelivery)
        if n > self.next_chunk:
            raise ChunkRejected(
                FwReason.GAP, f"chunk {n} while waiting for {self.next_chunk}", ends_job=False
            )
        room = self.manifest.size - self.received
        if len(data) > room or (len(data) != self.chunk_size and len(data) != room):
            # one bad chunk is refused, not the job: the platform can send it again
            raise ChunkRejected(
                FwReason.SIZE,
                f"chunk {n} of {len(data)} bytes does not fit the declared size "
                f"({self.chunk_size}-byte chunks, {room} bytes to go)",
                ends_job=False,
            )
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._hash.update(data)
        self.received += len(data)
        if self.received < self.manifest.size:
            return False
        if self._hash.digest() != self.manifest.sha256:
            self.discard()
            raise ChunkRejected(FwReason.DIGEST, "the image's SHA-256 does not match the manifest")
        os.replace(self.part, self.final)
        self.tag.unlink(missing_ok=True)
        return True

    def discard(self) -> None:
        for f in (self.part, self.final, self.tag):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        self.received = 0
        self._hash = hashlib.sha256()


class ImageStore:
    """`<state_dir>/firmware`: private (0700), at most `max_bytes` of images."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)

    def used(self, but: str | None = None) -> int:
        return sum(
            f.stat().st_size for f in self.dir.iterdir() if f.suffix in (".part", ".bin") and f.stem != but
        )

    def begin(self, image_id: str, manifest: Manifest, chunk_size: int) -> Download:
        if self.used(but=image_id) + manifest.size > self.max_bytes:
            raise ChunkRejected(
                FwReason.SIZE, f"{manifest.size} bytes would exceed the {self.max_bytes} allowed"
            )
        return Download(self.dir, image_id, manifest, chunk_size)


def _digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.digest()


class Floors:
    """The anti-rollback floor per device class, mirrored in several files, read as the max."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(paths)
        self.floors: dict[str, Version] = {}
        seen: list[dict[str, Version]] = []
        for path in self.paths:
            found: dict[str, Version] = {}
            try:
                for cls, text in json.loads(path.read_text(encoding="utf-8")).items():
                    found[str(cls)] = parse_version(text)
            except FileNotFoundError:
                pass  # a first start, or a mirror not written yet: healed below
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                # the other copy (and the max of both) still holds; this one is rewritten
                log.error("firmware: the security floor %s is unreadable (%s); rewriting it", path, exc)
            seen.append(found)
            for cls, v in found.items():
                if v > self.floors.get(cls, (0, 0, 0)):
                    self.floors[cls] = v
        if any(found != self.floors for found in seen):
            self._write()  # a copy was lost or restored from an old backup: heal it

    def _write(self) -> None:
        doc = json.dumps({k: show(v) for k, v in sorted(self.floors.items())}).encode()
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, doc)

    def get(self, device_class: str) -> Version | None:
        return self.floors.get(device_class)

    def raise_to(self, device_class: str, version: Version) -> None:
        if version <= self.floors.get(device_class, (0, 0, 0)):
            return
        self.floors[device_class] = version
        self._write()


def floors_for(state_dir: Path, mirror: Path | None) -> Floors:
    """The gateway's floors: `state_dir/firmware/floor.json`, plus `[firmware] floor_mirror`."""
    return Floors([state_dir / "firmware" / "floor.json", *([mirror] if mirror is not None else [])])
