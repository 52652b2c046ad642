"""The gateway's firmware updates: the `firmware.update` command, image chunks over MQTT,
flashing each target with SMP, and the `fw.progress` / `fw.result` reports.

1. `firmware.update` `{"manifest": bytes, "image_id", "devices": [ids], "chunk_size"}`:
   the manifest is checked for every target (signature against `[trust] firmware_key`,
   the device's `fw_class`, the security floor, expiry when the clock is trusted, the
   image size the store may hold). A target that fails gets its `fw.result` at once;
   if none passes, the command is rejected with the first reason. The job is persisted
   (`state_dir/firmware/jobs.json`), so a restart resumes it.
2. Chunks arrive on `{prefix}/{gw}/fw/{image_id}/{n}` and are written, hashed and
   bounded by firmware_bridge/store.py. A gap or a refused chunk is answered with an
   `fw.progress` naming `next_chunk`, so the platform knows where to resume.
3. A complete, verified image is flashed to each target in turn (firmware_bridge/smp.py
   over the device's `smp_port`), and each gets an `fw.result`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_bridge.manifest import Manifest, ManifestRejected, check, show
from firmware_bridge.reasons import FlashResult, FwReason
from firmware_bridge.store import ChunkRejected, Download, ImageStore, floors_for
from floor.clock import Clock
from floor.config import FirmwareConfig, WearableConfig
from floor.fsutil import write_atomic
from floor.messages import Incoming

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0
QUEUE_BYTES = 8 * 1024 * 1024  # image chunks held in memory before they are written
Report = Callable[[str, Mapping[str, Any]], object]


class UpdateRejected(Exception):
    def __init__(self, code: FwReason, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass
class Job:
    image_id: str
    signed: bytes
    chunk_size: int
    devices: list[str]
    manifest: Manifest
    download: Download
    results: dict[str, bool] = field(default_factory=dict)
    last_chunk: float = field(default_factory=time.monotonic)
    refused: ChunkRejected | None = None  # the last chunk refused while the job went on

    def doc(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "manifest": self.signed.hex(),
            "chunk_size": self.chunk_size,
            "devices": self.devices,
            "results": self.results,
        }


class FirmwareBridge:
    """Firmware jobs from the signed command to every target's result: one job's state
    (its manifest, the download's chunks, each target's result, the saved jobs file) is
    driven from the command, the chunks arriving over MQTT and the flashing task; the
    store, the manifest check and SMP flashing are modules of their own."""

    def __init__(
        self,
        cfg: FirmwareConfig,
        *,
        state_dir: Path,
        firmware_key: Ed25519PublicKey | None,
        clock: Clock,
        wearables: Callable[[], Mapping[str, WearableConfig]],
        report: Report,
        transport: Callable[[], Any] | None = None,  # default: SMP over the serial port
        ble_client: Callable[[str, float], Awaitable[Any]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.dir = state_dir / "firmware"
        self.store = ImageStore(self.dir / "images", cfg.max_bytes)
        self.floors = floors_for(state_dir, cfg.floor_mirror)
        self.key = firmware_key
        self.clock = clock
        self._wearables = wearables
        self._report = report
        self._transport = transport
        self._ble_client = ble_client
        self.rejected_chunks = 0
        self._chunks: asyncio.Queue[tuple[str, int, bytes]] = asyncio.Queue()
        self._queued_bytes = 0  # chunks received but not yet written, bounded by QUEUE_BYTES
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._last_progress: dict[tuple[str, str], float] = {}
        self._jobs_path = self.dir / "jobs.json"
        self.jobs = {job.image_id: job for job in read_jobs(self._jobs_path, self._check_any, self.store)}

    def _save(self) -> None:
        write_atomic(self._jobs_path, json.dumps([j.doc() for j in self.jobs.values()]).encode())

    def _check_any(self, signed: bytes) -> Manifest:
        """Re-check a persisted manifest: signature and shape only (targets were checked)."""
        if self.key is None:
            raise ManifestRejected(FwReason.BAD_SIGNATURE, "no firmware key")
        return recheck(signed, self.key, self.cfg.max_bytes)

    # -- the command -----------------------------------------------------------------------

    async def command(self, args: Mapping[str, Any]) -> dict[str, Any]:
        signed, image_id, devices, chunk_size = command_args(args)
        if self.key is None:
            raise UpdateRejected(FwReason.UNSUPPORTED, "no [trust] firmware_key configured")
        if image_id in self.jobs:
            raise UpdateRejected(FwReason.BUSY, f"image {image_id} is already being delivered")
        manifest, accepted, rejected = self._targets(self.key, signed, image_id, devices)
        if manifest is None or not accepted:
            first = next(iter(rejected.values()), FwReason.BAD_ARGS)
            raise UpdateRejected(first, "no target accepted the manifest")
        if not isinstance(signed, bytes):  # check_manifest accepted it, so it is
            raise UpdateRejected(FwReason.MALFORMED, "manifest must be bytes")
        try:
            download = await asyncio.to_thread(self.store.begin, image_id, manifest, chunk_size)
        except (ChunkRejected, ValueError) as exc:
            for dev in accepted:
                self._result(dev, image_id, False, FwReason.SIZE, str(exc))
            raise UpdateRejected(FwReason.SIZE, str(exc)) from None
        self.floors.raise_to(manifest.device_class, manifest.min_version)
        job = Job(image_id, signed, chunk_size, accepted, manifest, download)
        self.jobs[image_id] = job
        await asyncio.to_thread(self._save)
        self._progress(job, force=True)
        if download.done():
            self._ready.put_nowait(image_id)
        return {
            "image_id": image_id,
            "accepted": accepted,
            "rejected": rejected,
            "next_chunk": download.next_chunk,
        }

    def _targets(
        self, key: Ed25519PublicKey, signed: Any, image_id: str, devices: list[Any]
    ) -> tuple[Manifest | None, list[str], dict[str, FwReason]]:
        """Check the manifest for each target's class and floor; a refused target gets its
        fw.result at once. The manifest (as checked), who took it, who did not and why."""
        now = self.clock.unix_ms() if self.clock.trusted else None
        accepted: list[str] = []
        rejected: dict[str, FwReason] = {}
        manifest: Manifest | None = None
        for dev in devices:
            w = self._wearables().get(dev) if isinstance(dev, str) else None
            reason: FwReason | None = None
            detail = ""
            if w is None:
                reason = FwReason.UNKNOWN_DEVICE
            elif w.fw_class is None:
                reason, detail = FwReason.WRONG_CLASS, "the device has no fw_class in the config"
            else:
                try:
                    manifest = check(
                        signed,
                        firmware_key=key,
                        device_class=w.fw_class,
                        running=None,
                        floor=self.floors.get(w.fw_class),
                        now_ms=now,
                        max_size=self.cfg.max_bytes,
                    )
                    accepted.append(dev)
                    continue
                except ManifestRejected as exc:
                    reason, detail = exc.reason, exc.detail
            rejected[str(dev)] = reason
            self._result(str(dev), image_id, False, reason, detail)
        return manifest, accepted, rejected

    # -- chunks ------------------------------------------------------------------------------

    def on_message(self, msg: Incoming) -> None:
        """A chunk from `{prefix}/{gw}/fw/{image_id}/{n}` (called by the MQTT connection)."""
        parts = msg.topic.rsplit("/", 2)
        try:
            image_id, n = parts[-2], int(parts[-1])
        except (IndexError, ValueError):
            self.rejected_chunks += 1
            return
        if self._queued_bytes + len(msg.payload) > QUEUE_BYTES:
            # Faster than the disk: dropped, and the gap that follows is reported with
            # the next chunk wanted, from which the platform resends.
            self.rejected_chunks += 1
            return
        self._queued_bytes += len(msg.payload)
        self._chunks.put_nowait((image_id, n, msg.payload))

    async def _take_chunks(self) -> None:
        while True:
            image_id, n, data = await self._chunks.get()
            self._queued_bytes -= len(data)
            job = self.jobs.get(image_id)
            if job is None:
                self.rejected_chunks += 1  # no update accepted for this image: never written
                continue
            try:
                complete = await asyncio.to_thread(job.download.put, n, data)
            except ChunkRejected as exc:
                self.rejected_chunks += 1
                if exc.ends_job:
                    # Not the image the manifest declared (altered, mixed, or longer than
                    # declared): nothing of it will reach a device.
                    await self._fail(job, exc.reason, str(exc))
                else:
                    # this chunk only (a gap, a wrong size): the job waits for it again, and
                    # says why if the download then stops
                    if job.refused is None or exc.reason != FwReason.GAP:
                        job.refused = exc  # a gap follows from a chunk refused before it
                    self._progress(job, error=exc.reason, force=True)
                continue
            job.last_chunk = time.monotonic()
            job.refused = None
            if complete:
                self._progress(job, force=True)
                self._ready.put_nowait(image_id)
            else:
                self._progress(job)

    async def _expire(self) -> None:
        """A download that stops (a platform gone quiet, a size that lies upward) ends as `timeout`."""
        while True:
            await asyncio.sleep(min(5.0, self.cfg.download_timeout_s / 4))
            now = time.monotonic()
            for job in list(self.jobs.values()):
                if not job.download.done() and now - job.last_chunk > self.cfg.download_timeout_s:
                    idle = (
                        f"no chunk for {self.cfg.download_timeout_s:.0f} s at {job.download.received} bytes"
                    )
                    if job.refused is not None and job.refused.reason == FwReason.SIZE:
                        # it stopped at a chunk that did not fit: the declared size lied
                        await self._fail(job, FwReason.SIZE, f"{job.refused.detail}; then {idle}")
                    else:
                        await self._fail(job, FwReason.TIMEOUT, idle)

    async def _fail(self, job: Job, reason: FwReason, detail: str) -> None:
        for dev in job.devices:
            if dev not in job.results:
                self._result(dev, job.image_id, False, reason, detail)
        self.jobs.pop(job.image_id, None)
        await asyncio.to_thread(job.download.discard)
        await asyncio.to_thread(self._save)

    # -- flashing ---------------------------------------------------------------------------

    async def run(self) -> None:
        for image_id, job in self.jobs.items():
            if job.download.done():
                self._ready.put_nowait(image_id)
            else:
                self._progress(job, force=True)  # tells the platform where to resume
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._take_chunks(), name="firmware.chunks")
            tg.create_task(self._expire(), name="firmware.expire")
            while True:
                ready = self.jobs.get(await self._ready.get())
                if ready is not None:
                    await self._flash_all(ready)

    async def _flash_all(self, job: Job) -> None:
        version = show(job.manifest.version)
        for dev in job.devices:
            if dev in job.results:
                continue
            w = self._wearables().get(dev)
            if w is None:
                res = FlashResult(False, FwReason.UNKNOWN_DEVICE, "unpaired since the update was accepted")
            elif w.smp_port is not None:
                res = await self._flash_one(job, dev, self._serial_transport(), w.smp_port, version)
            elif self._ble_client is not None:
                from firmware_bridge.smp_ble import SessionSMPTransport  # the SMP stack: on first use

                over_ble = functools.partial(SessionSMPTransport, self._ble_client)
                res = await self._flash_one(job, dev, over_ble, dev, version)
            else:
                res = FlashResult(False, FwReason.NO_TRANSPORT, "no smp_port and no BLE radio")
            job.results[dev] = res.ok
            if res.ok:
                # a device confirmed this version: nothing older may follow it (the floor
                # rose only from manifests' min_version before)
                self.floors.raise_to(job.manifest.device_class, job.manifest.version)
            self._result(
                dev, job.image_id, res.ok, res.reason, res.detail, version=res.version, resumed=res.resumed
            )
            await asyncio.to_thread(self._save)
        self.jobs.pop(job.image_id, None)
        await asyncio.to_thread(job.download.discard)
        await asyncio.to_thread(self._save)

    def _serial_transport(self) -> Callable[[], Any]:
        if self._transport is not None:
            return self._transport
        from smpclient.transport.serial import SMPSerialTransport  # on first use

        return SMPSerialTransport

    async def _flash_one(
        self, job: Job, dev: str, transport: Callable[[], Any], address: str, version: str
    ) -> FlashResult:
        def progress(off: int, size: int) -> None:
            self._progress(job, device=dev, done=off, force=off >= size)

        return await flash_image(job, dev, transport, address, version, cfg=self.cfg, progress=progress)

    # -- reports ----------------------------------------------------------------------------

    def _result(
        self,
        dev: str,
        image_id: str,
        ok: bool,
        reason: FwReason | None,
        detail: str = "",
        *,
        version: str | None = None,
        resumed: int | None = None,
    ) -> None:
        rec: dict[str, Any] = {"device": dev, "image_id": image_id, "ok": ok}
        optional = {"reason": reason, "detail": detail[:300], "version": version, "resumed": resumed}
        rec |= {k: v for k, v in optional.items() if v is not None and v != ""}
        self._report("fw.result", rec)

    def _progress(
        self,
        job: Job,
        *,
        device: str | None = None,
        done: int | None = None,
        error: str | None = None,
        force: bool = False,
    ) -> None:
        key = (job.image_id, device or "")
        now = time.monotonic()
        if not force and now - self._last_progress.get(key, 0.0) < PROGRESS_EVERY_S:
            return
        self._last_progress[key] = now
        rec = progress_record(job, device, done, error)
        self._report("fw.progress", rec)

    def snapshot(self) -> dict[str, Any]:
        return {
            "jobs": {
                k: {"received": j.download.received, "size": j.manifest.size, "results": j.results}
                for k, j in self.jobs.items()
            },
            "rejected_chunks": self.rejected_chunks,
            "floors": {k: show(v) for k, v in self.floors.floors.items()},
        }


def read_jobs(path: Path, check_manifest: Callable[[bytes], Manifest], store: ImageStore) -> list[Job]:
    """The jobs saved in `path` that can resume (each manifest checked again)."""
    try:
        docs = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except ValueError as exc:
        log.error("firmware: %s unreadable (%s); pending updates dropped", path, exc)
        return []
    jobs = []
    for d in docs:
        try:
            signed = bytes.fromhex(d["manifest"])
            m = check_manifest(signed)
            jobs.append(
                Job(
                    d["image_id"],
                    signed,
                    int(d["chunk_size"]),
                    list(d["devices"]),
                    m,
                    store.begin(d["image_id"], m, int(d["chunk_size"])),
                    dict(d.get("results", {})),
                )
            )
        except (KeyError, ValueError, TypeError, ManifestRejected, ChunkRejected) as exc:
            log.error("firmware: a pending update cannot resume: %s", exc)
    return jobs


async def flash_image(
    job: Job,
    dev: str,
    transport: Callable[[], Any],
    address: str,
    version: str,
    *,
    cfg: FirmwareConfig,
    progress: Callable[[int, int], None],
) -> FlashResult:
    """Flash the job's stored image on one device, read and checked against its manifest once."""
    from firmware_bridge.smp import Flasher  # smpclient and pydantic load only to flash

    flasher = Flasher(
        transport, address, timeout_s=cfg.smp_timeout_s, reboot_wait_s=cfg.reboot_wait_s, progress=progress
    )
    try:
        image = await asyncio.to_thread(job.download.final.read_bytes)
        if hashlib.sha256(image).digest() != job.manifest.sha256:  # checked as read, once
            return FlashResult(False, FwReason.DIGEST, "the stored image no longer matches its manifest")
        return await flasher.flash(image, version)
    except Exception as exc:  # a device answering nonsense must not stall the queue of updates
        log.exception("firmware: %s: flashing failed", dev)
        return FlashResult(False, FwReason.DEVICE_REFUSED, f"unexpected answer: {exc!r}"[:300])


def command_args(args: Mapping[str, Any]) -> tuple[Any, str, list[Any], int]:
    """A firmware.update's manifest (unchecked), image id, devices and chunk size."""
    signed, image_id = args.get("manifest"), args.get("image_id")
    devices, chunk_size = args.get("devices"), args.get("chunk_size", 4096)
    if not isinstance(image_id, str) or not isinstance(devices, list) or not devices:
        raise UpdateRejected(FwReason.BAD_ARGS, "image_id and devices are required")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or not 0 < chunk_size <= 65536:
        raise UpdateRejected(FwReason.BAD_ARGS, "chunk_size must be 1..65536")
    return signed, image_id, devices, chunk_size


def recheck(signed: bytes, key: Ed25519PublicKey, max_bytes: int) -> Manifest:
    """A persisted manifest's signature and shape, checked again (its targets were)."""
    return check(
        signed, firmware_key=key, device_class=None, running=None, floor=None, now_ms=None, max_size=max_bytes
    )


def progress_record(job: Job, device: str | None, done: int | None, error: str | None) -> dict[str, Any]:
    """`fw.progress`: the download's (device None), or one device's upload."""
    rec: dict[str, Any] = {"image_id": job.image_id, "size": job.manifest.size}
    if device is None:
        rec.update(phase="download", received=job.download.received, next_chunk=job.download.next_chunk)
    else:
        rec.update(phase="upload", device=device, done=done)
    if error is not None:
        rec["error"] = error
    return rec
