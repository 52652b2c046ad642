"""Flashing a wearable with MCUmgr SMP (smpclient): upload to the secondary slot with
progress, resuming from the device's own offset after a broken link; mark for test;
reset; confirm only when the device comes back running the new version. Anything
else is left to MCUboot, which reverts an unconfirmed image at the next boot, and
the failure is reported with its reason.

The transport is smpclient's: `SMPSerialTransport` for a serial port (SMP console
framing), or a BLE transport through the same bleak seam as the wearables.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import struct
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from smpclient import SMPClient
from smpclient.exceptions import SMPClientException, SMPUploadError, SMPValidationException
from smpclient.generics import error, success
from smpclient.mcuboot import IMAGE_TLV, ImageInfo, MCUBootImageError
from smpclient.requests.image_management import ImageStatesRead, ImageStatesWrite
from smpclient.requests.os_management import ResetWrite
from smpclient.transport import SMPTransport, SMPTransportDisconnected

from firmware_bridge.reasons import FlashResult, FwReason
from floor.supervisor import Backoff, retry

log = logging.getLogger(__name__)
# smpclient logs every malformed response in full (the device's bytes, dumped): a hostile
# device would fill the journal. Our own one-line reason is logged instead.
logging.getLogger("smpclient").setLevel(logging.CRITICAL)

ENOTSUP = 8  # MGMT_ERR.ENOTSUP
RETRY_MIN_S, RETRY_MAX_S = 0.2, 2.0  # a dropped cable or BLE link: back soon, or not at all
LINK_ERRORS = (TimeoutError, OSError, SMPClientException, SMPTransportDisconnected, ConnectionError, EOFError)


class _CheckedClient(SMPClient):
    """SMPClient whose responses, the device's bytes, fail only as SMPClientException: the
    library lets a malformed frame escape as ValueError, TypeError, AssertionError or a
    CBOR error (found by bench/fuzz.py), which no caller could tell from a bug of ours."""

    async def request(self, request: Any, timeout_s: float | None = None) -> Any:
        try:
            return await super().request(request, timeout_s)
        except LINK_ERRORS:
            raise
        except Exception as exc:
            raise SMPValidationException(f"malformed SMP response: {type(exc).__name__}", "") from None


class UploadRefused(Exception):
    pass


def slot_hash(image: bytes) -> bytes:
    """What the device will report as the image's hash: MCUboot's SHA-256 TLV for a signed
    MCUboot image, else the SHA-256 of the bytes. (smpclient parses only files: the bytes,
    already checked, go to a private temporary file for it, never read back to flash.)"""
    with tempfile.TemporaryDirectory(prefix="gridedge-fw-") as d:
        path = Path(d) / "image.bin"
        path.write_bytes(image)
        try:
            return bytes(ImageInfo.load_file(str(path)).get_tlv(IMAGE_TLV.SHA256).value)
        except (MCUBootImageError, ValueError, OSError, struct.error, KeyError):
            return hashlib.sha256(image).digest()


def _running(states: list[Any]) -> Any | None:
    """The image the device runs: the active one (in MCUboot's direct-XIP and RAM-load modes
    it may be in either slot), else the primary slot's."""
    return next((s for s in states if s.active), None) or next((s for s in states if s.slot == 0), None)


def _unsupported(response: Any) -> bool:
    """An SMP error saying the operation does not exist on this device (MGMT_ERR.ENOTSUP)."""
    rc = getattr(response, "rc", None)
    err = getattr(response, "err", None)
    code = rc if rc is not None else getattr(err, "rc", None)
    return code is not None and int(code) == ENOTSUP


_SEMVER = re.compile(r"\s*(\d+)\.(\d+)\.(\d+)")


def _triple(text: str) -> tuple[int, ...] | None:
    """major.minor.patch of a reported version (`1.5.0`, `1.5.0.0`, `1.5.0-build0`,
    `1.6.0-rc1`), or None when it has none."""
    m = _SEMVER.match(text)
    return None if m is None else tuple(int(x) for x in m.groups())


def _newer(version: str, running: str) -> bool | None:
    """Whether `version` is above what the device runs (None: cannot tell)."""
    a, b = _triple(version), _triple(running)
    return None if a is None or b is None else a > b


def same_version(reported: str | None, version: str) -> bool:
    """`1.5.0` as reported by img_mgmt (`1.5.0`, `1.5.0.0`, `1.5.0-build0`...)."""
    running = None if reported is None else _triple(reported)
    return running is not None and running == _triple(version)


class Flasher:
    """One device: `flash(image, version)` runs the whole update and never raises."""

    def __init__(
        self,
        transport: Callable[[], SMPTransport],
        address: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 5,
        reboot_wait_s: float = 20.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self._transport = transport
        self.address = address
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.reboot_wait_s = reboot_wait_s
        self.progress = progress

    async def client(self, connect_timeout: float | None = None) -> SMPClient:
        client = _CheckedClient(self._transport(), self.address, timeout_s=self.timeout_s)
        await client.connect(connect_timeout if connect_timeout is not None else self.timeout_s)
        return client

    async def states(self, client: SMPClient) -> list[Any]:
        r = await client.request(ImageStatesRead())
        if not success(r):
            raise UploadRefused(f"image state read refused: {r}")
        return list(r.images)

    async def running_version(self) -> str | None:
        """The version in the device's primary slot (raises on a link failure)."""
        client = await self.client()
        try:
            running = _running(await self.states(client))
            return None if running is None else str(running.version)
        finally:
            with contextlib.suppress(*LINK_ERRORS):
                await client.disconnect()

    async def upload(self, client: SMPClient, image: bytes) -> None:
        async for off in client.upload(image, first_timeout_s=self.timeout_s * 4):
            if self.progress is not None:
                self.progress(off, len(image))

    async def reset(self, client: SMPClient) -> None:
        with contextlib.suppress(*LINK_ERRORS):  # a device may drop the link as it resets
            reset = await client.request(ResetWrite())
            if error(reset):
                raise UploadRefused(f"reset refused: {reset}")

    async def transfer(self, image: bytes) -> int:
        """Upload to the secondary slot, resuming from the device's offset after a broken
        link; returns how many times it resumed. UploadRefused when the device says no,
        TimeoutError when the link never holds long enough."""
        resumed = 0

        async def once() -> None:
            async with self._session() as client:
                try:
                    await self.upload(client, image)
                except SMPUploadError as exc:  # the device answered with an error: not the link
                    raise UploadRefused(str(exc)[:200]) from None

        def resuming(attempt: int, exc: BaseException) -> None:
            nonlocal resumed
            resumed += 1
            log.warning("smp %s: link lost (%r); resuming (attempt %d)", self.address, exc, attempt + 1)

        try:
            await retry(
                once, attempts=self.attempts, backoff=self._backoff(), retry_on=LINK_ERRORS, on_retry=resuming
            )
        except LINK_ERRORS as exc:
            raise TimeoutError(
                f"no complete upload after {self.attempts} attempts ({resumed} resumes): {exc!r}"
            ) from None
        return resumed

    def _backoff(self) -> Backoff:
        return Backoff(RETRY_MIN_S, RETRY_MAX_S)

    @contextlib.asynccontextmanager
    async def _session(self, connect_timeout: float | None = None) -> AsyncIterator[SMPClient]:
        """A connected client, disconnected (quietly: the link may be gone) afterwards."""
        client = await self.client(connect_timeout)
        try:
            yield client
        finally:
            with contextlib.suppress(*LINK_ERRORS):
                await client.disconnect()

    async def flash(self, image: bytes, version: str) -> FlashResult:
        """Upload `image` (declared `version`; the very bytes the caller checked against
        its manifest, never read again from a file), test it, reset, confirm."""
        expected = await asyncio.to_thread(slot_hash, image)
        refused = await self._refuse_older(version)
        if refused is not None:
            return refused
        try:
            resumed = await self.transfer(image)
        except UploadRefused as exc:
            return FlashResult(False, FwReason.DEVICE_REFUSED, str(exc))
        except TimeoutError as exc:
            return FlashResult(False, FwReason.TIMEOUT, str(exc), resumed=self.attempts)

        async def activate() -> FlashResult:
            async with self._session() as client:
                return await self._activate(client, expected, version, resumed)

        def relink(_attempt: int, exc: BaseException) -> None:
            log.warning("smp %s: link lost before the reset (%r)", self.address, exc)

        try:
            return await retry(
                activate,
                attempts=self.attempts,
                backoff=self._backoff(),
                retry_on=LINK_ERRORS,
                on_retry=relink,
            )
        except UploadRefused as exc:
            return FlashResult(False, FwReason.DEVICE_REFUSED, str(exc), resumed=resumed)
        except LINK_ERRORS:
            return FlashResult(
                False, FwReason.TIMEOUT, "the device did not answer after the upload", resumed=resumed
            )

    async def _refuse_older(self, version: str) -> FlashResult | None:
        """Why `version` may not go on the device (older, the same, unreadable, or no
        answer); None when it is newer than what the device runs."""
        try:
            running = await self.running_version()
        except (*LINK_ERRORS, UploadRefused) as exc:
            return FlashResult(False, FwReason.TIMEOUT, f"device not answering: {exc!r}"[:300])
        if running is None:
            return None
        newer = _newer(version, running)
        if newer is None:
            # never flash what might be a downgrade: an unreadable version is a refusal
            detail = f"the device reports version {running[:40]!r}: cannot tell {version} is newer"
            return FlashResult(False, FwReason.ROLLBACK, detail, running)
        if newer is False:
            what = "the same version as" if same_version(running, version) else "older than"
            return FlashResult(
                False, FwReason.ROLLBACK, f"{version} is {what} the running {running}", running
            )
        return None

    async def _activate(self, client: SMPClient, expected: bytes, version: str, resumed: int) -> FlashResult:
        states = await self.states(client)
        secondary = next((s for s in states if s.slot == 1 and s.hash == expected), None)
        if secondary is None:
            detail = "the secondary slot does not hold the uploaded image"
            return FlashResult(False, FwReason.DIGEST, detail, resumed=resumed)
        r = await client.request(ImageStatesWrite(hash=secondary.hash, confirm=False))
        if not success(r) and not _unsupported(r):
            return FlashResult(False, FwReason.DEVICE_REFUSED, f"mark for test refused: {r}", resumed=resumed)
        # ENOTSUP: an MCUboot in direct-XIP or RAM-load mode has no test swap; it boots the
        # highest valid version by itself at the reset, and the check below still applies.
        await self.reset(client)
        with contextlib.suppress(*LINK_ERRORS):
            await client.disconnect()
        return await self._came_back(version, resumed)

    async def _came_back(self, version: str, resumed: int) -> FlashResult:
        """Poll until the device answers running `version` (then confirm it), or until
        `reboot_wait_s` has passed: a device that stays on another version was reverted by
        MCUboot (or never rebooted), and that is the failure reported."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reboot_wait_s
        seen: str | None = None
        last: Exception | None = None
        await asyncio.sleep(0.2)
        while loop.time() < deadline:
            client: SMPClient | None = None
            try:
                client = await self.client(connect_timeout=max(0.5, deadline - loop.time()))
                running = _running(await self.states(client))
                seen = None if running is None else str(running.version)
                if running is not None and same_version(running.version, version):
                    r = await client.request(ImageStatesWrite(confirm=True))
                    if not success(r) and not _unsupported(r):
                        return FlashResult(
                            False, FwReason.DEVICE_REFUSED, f"confirm refused: {r}", version=version
                        )
                    return FlashResult(True, version=version, resumed=resumed)
            except (*LINK_ERRORS, UploadRefused) as exc:
                last = exc
            finally:
                if client is not None:
                    with contextlib.suppress(*LINK_ERRORS):
                        await client.disconnect()
            await asyncio.sleep(0.5)
        if seen is not None:
            detail = f"running {seen} after the reset"
            return FlashResult(False, FwReason.DID_NOT_COME_BACK, detail, version=seen, resumed=resumed)
        return FlashResult(
            False, FwReason.DID_NOT_COME_BACK, f"no answer after the reset: {last!r}", resumed=resumed
        )
