"""A Python MCUmgr SMP device with an MCUboot-like pair of slots, on a pty.

It speaks the SMP console framing over serial (what a Zephyr SMP server does on a
UART) and implements what an update needs: MCUmgr parameters, image state read and
write (test / confirm), image upload with resume from its own offset, and reset.
On reset a slot marked for test is swapped in (its version now runs, unconfirmed);
in `comes_back_old` mode the "new firmware" fails and MCUboot reverts, so the device
comes back on the old version. `refuse` answers every upload with an error.
Test support only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import tty
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
from smp import header as smphdr
from smp import image_management as img
from smp import os_management as osm
from smp import packet as smppacket
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
class SmpDevice:
    link: Path  # the pty's stable path (a symlink), as a udev rule would give
    running: str = "1.4.2"
    refuse: bool = False
    comes_back_old: bool = False
    slots: list[Slot] = field(default_factory=list)
    upload: bytearray = field(default_factory=bytearray)
    upload_len: int = 0
    resets: int = 0
    requests: int = 0
    cut_after: int | None = None  # close the pty after this many upload writes (a broken link)
    cuts: int = 0

    def __post_init__(self) -> None:
        self.slots = [Slot(self.running, os.urandom(64)), Slot("0.0.0")]
        self._stop = threading.Event()
        self.master = -1
        self.plug()

    def plug(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self._slave = slave
        tmp = self.link.with_suffix(".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)
        self._thread = threading.Thread(target=self._serve, args=(self.master,), daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master = -1

    def stop(self) -> None:
        self._stop.set()
        self.unplug()

    @property
    def uploads(self) -> int:
        return self.requests

    def _serve(self, fd: int) -> None:
        buf = b""
        decoder = None
        while not self._stop.is_set():
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line += b"\n"
                if line.startswith(b"\x06\x09"):
                    decoder = smppacket.decode()
                    next(decoder)
                elif not line.startswith(b"\x04\x14") or decoder is None:
                    continue
                try:
                    decoder.send(line)
                except StopIteration as done:
                    decoder = None
                    reply = self._handle(done.value)
                    if reply is None:
                        return  # the link is cut
                    for chunk in smppacket.encode(reply, line_length=BUF_SIZE):
                        with contextlib.suppress(OSError):
                            os.write(fd, chunk)
                except Exception:  # a malformed frame: a real device ignores it too
                    decoder = None

    def _handle(self, frame: bytes) -> bytes | None:
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
            if h.op == smphdr.OP.WRITE:
                req = img.ImageStatesWriteRequest.loads(frame)
                target = next((s for s in self.slots if s.hash == req.hash), None)
                if req.confirm:
                    self.slots[0].confirmed = True
                elif target is not None and target is self.slots[1]:
                    target.pending = True
                resp = img.ImageStatesWriteResponse(sequence=seq, images=self._states())
            else:
                resp = img.ImageStatesReadResponse(sequence=seq, images=self._states())
        elif g == smphdr.GroupId.IMAGE_MANAGEMENT and c == smphdr.CommandId.ImageManagement.UPLOAD:
            req_up = img.ImageUploadWriteRequest.loads(frame)
            self.requests += 1
            if self.refuse:
                return _error(h, int(img.IMG_MGMT_ERR.FLASH_WRITE_FAILED))
            else:
                if (
                    req_up.off == 0
                    and req_up.len is not None
                    and (self.upload_len != req_up.len or not self.upload)
                ):
                    self.upload = bytearray()
                    self.upload_len = req_up.len
                if req_up.off == len(self.upload):
                    self.upload += req_up.data
                done = len(self.upload) >= self.upload_len
                if done:
                    self.slots[1] = Slot(
                        self._version_of(bytes(self.upload)), bytes(self.upload), confirmed=False
                    )
                resp = img.ImageUploadWriteResponse(sequence=seq, off=len(self.upload))
                if self.cut_after is not None and self.requests >= self.cut_after:
                    # The cable is pulled mid-upload and plugged back a moment later.
                    self.cut_after = None
                    self.cuts += 1
                    self.unplug()
                    threading.Timer(0.3, self.plug).start()
                    return None
        else:
            return _error(h, int(osm.OS_MGMT_RET_RC.UNKNOWN))
        return bytes(resp)

    @staticmethod
    def _version_of(image: bytes) -> str:
        # The tests' images start with b"VER=<semver>;" (an MCUboot header carries it in a real one).
        if image.startswith(b"VER="):
            return image[4 : image.index(b";")].decode()
        return "0.0.0"

    def _states(self) -> list[img.ImageState]:
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
