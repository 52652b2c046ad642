"""A simulated MCUmgr SMP server with an MCUboot-like pair of slots (transport-independent).

`SimSmpServer.handle(frame)` takes one SMP request frame and returns the response
frame: MCUmgr parameters, image state read and write (test / confirm), image upload
with resume from its own offset, and reset. On reset a slot marked for test is
swapped in (its version runs, unconfirmed); with `comes_back_old` the new image
"fails to boot" and MCUboot keeps the old one. `refuse` answers every upload with an
error. The simulated wearables (drivers/ble/sim/peripherals.py) carry one behind the
SMP GATT service; tests/support/smp_device.py puts one on a pty.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import cbor2
from smp import header as smphdr
from smp import image_management as img
from smp import os_management as osm
from smp.message import Response

BUF_SIZE = 512


def _error(h: smphdr.Header, rc: int) -> bytes:
    """An SMP version 2 error response to the request with header `h`."""
    body = cbor2.dumps({"err": {"group": int(h.group_id), "rc": rc}})
    op = smphdr.OP.WRITE_RSP if h.op == smphdr.OP.WRITE else smphdr.OP.READ_RSP
    hdr = smphdr.Header(
        op=op,
        version=h.version,
        flags=smphdr.Flag(0),
        length=len(body),
        group_id=h.group_id,
        sequence=h.sequence,
        command_id=h.command_id,
    )
    return bytes(hdr) + body


@dataclass
class Slot:
    version: str
    data: bytes = b""
    pending: bool = False
    confirmed: bool = True

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.data).digest()


@dataclass
class SimSmpServer:
    running: str = "1.4.2"
    refuse: bool = False
    comes_back_old: bool = False
    slots: list[Slot] = field(default_factory=list)
    upload: bytearray = field(default_factory=bytearray)
    upload_len: int = 0
    resets: int = 0
    requests: int = 0
    on_reset: Callable[[], None] | None = None  # the transport reacts (a BLE device drops its link)

    def __post_init__(self) -> None:
        if not self.slots:
            self.slots = [Slot(self.running, os.urandom(64)), Slot("0.0.0")]

    def handle(self, frame: bytes) -> bytes:
        h = smphdr.Header.loads(frame[: smphdr.Header.SIZE])
        seq = h.sequence
        g, c = int(h.group_id), int(h.command_id)
        resp: Response
        if g == smphdr.GroupId.OS_MANAGEMENT and c == smphdr.CommandId.OSManagement.MCUMGR_PARAMETERS:
            resp = osm.MCUMgrParametersReadResponse(sequence=seq, buf_size=BUF_SIZE, buf_count=4)
        elif g == smphdr.GroupId.OS_MANAGEMENT and c == smphdr.CommandId.OSManagement.RESET:
            self._reset()
            resp = osm.ResetWriteResponse(sequence=seq)
        elif g == smphdr.GroupId.IMAGE_MANAGEMENT and c == smphdr.CommandId.ImageManagement.STATE:
            resp = self._state(h, frame)
        elif g == smphdr.GroupId.IMAGE_MANAGEMENT and c == smphdr.CommandId.ImageManagement.UPLOAD:
            if self.refuse:
                self.requests += 1
                return _error(h, int(img.IMG_MGMT_ERR.FLASH_WRITE_FAILED))
            resp = self._upload(seq, frame)
        else:
            return _error(h, int(osm.OS_MGMT_RET_RC.UNKNOWN))
        return bytes(resp)

    def _state(self, h: smphdr.Header, frame: bytes) -> Response:
        if h.op != smphdr.OP.WRITE:
            return img.ImageStatesReadResponse(sequence=h.sequence, images=self.states())
        req = img.ImageStatesWriteRequest.loads(frame)
        target = next((s for s in self.slots if s.hash == req.hash), None)
        if req.confirm:
            self.slots[0].confirmed = True
        elif target is not None and target is self.slots[1]:
            target.pending = True
        return img.ImageStatesWriteResponse(sequence=h.sequence, images=self.states())

    def _upload(self, seq: int, frame: bytes) -> Response:
        up = img.ImageUploadWriteRequest.loads(frame)
        self.requests += 1
        if up.off == 0 and up.len is not None and (self.upload_len != up.len or not self.upload):
            self.upload = bytearray()
            self.upload_len = up.len
        if up.off == len(self.upload):
            self.upload += up.data
        if len(self.upload) >= self.upload_len:
            data = bytes(self.upload)
            self.slots[1] = Slot(version_of(data), data, confirmed=False)
        return img.ImageUploadWriteResponse(sequence=seq, off=len(self.upload))

    def states(self) -> list[img.ImageState]:
        out = []
        for i, s in enumerate(self.slots):
            if i == 1 and not s.data:
                continue
            out.append(
                img.ImageState(
                    slot=i,
                    version=s.version,
                    hash=s.hash,
                    active=i == 0,
                    confirmed=s.confirmed if i == 0 else False,
                    pending=s.pending,
                    bootable=True,
                )
            )
        return out

    def _reset(self) -> None:
        self.resets += 1
        if self.slots[1].pending:
            if self.comes_back_old:
                self.slots[1].pending = False  # the new image did not boot: MCUboot kept the old one
            else:
                self.slots[0], self.slots[1] = self.slots[1], self.slots[0]
                self.slots[0].pending = False
                self.slots[0].confirmed = False  # running on test until confirmed
                self.slots[1].pending = False
        self.upload = bytearray()
        self.upload_len = 0
        if self.on_reset is not None:
            self.on_reset()


def version_of(image: bytes) -> str:
    """The simulator's images start with b"VER=<semver>;" (a real one carries it in its MCUboot header)."""
    if image.startswith(b"VER=") and b";" in image[:32]:
        return image[4 : image.index(b";")].decode()
    return "0.0.0"
