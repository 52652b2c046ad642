"""A simulated MCUmgr SMP device (drivers/ble/sim/smp_server.py) on a pty, with the SMP
console framing a Zephyr SMP server uses on a UART, and a cable that can be pulled."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

from smp import packet as smppacket

from drivers.ble.sim.smp_server import BUF_SIZE, SimSmpServer
from tests.support.pty import Pty


class SmpDevice(SimSmpServer):
    def __init__(
        self,
        link: Path,
        running: str = "1.4.2",
        *,
        refuse: bool = False,
        comes_back_old: bool = False,
        cut_after: int | None = None,
    ) -> None:
        super().__init__(running=running, refuse=refuse, comes_back_old=comes_back_old)
        self.link = link  # the pty's stable path (a symlink), as a udev rule would give
        self.cut_after = cut_after  # pull the cable after this many upload requests
        self.cuts = 0
        self._stop = threading.Event()
        self.pty = Pty(link)
        self._serve_pty()

    def _serve_pty(self) -> None:
        threading.Thread(target=self._serve, args=(self.pty.master,), daemon=True).start()

    def plug(self) -> None:
        self.pty.plug()
        self._serve_pty()

    def unplug(self) -> None:
        self.pty.unplug()

    def stop(self) -> None:
        self._stop.set()
        self.unplug()

    def _serve(self, fd: int) -> None:
        buf = b""
        self._decoder: Any = None
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
                if not self._line(fd, line + b"\n"):
                    return

    def _line(self, fd: int, line: bytes) -> bool:
        """One line of the SMP console (framed per MCUmgr's serial transport); False when
        the cable was pulled."""
        if line.startswith(b"\x06\x09"):
            self._decoder = smppacket.decode()
            next(self._decoder)
        elif not line.startswith(b"\x04\x14") or self._decoder is None:
            return True
        try:
            self._decoder.send(line)
        except StopIteration as done:
            self._decoder = None
            reply = self.handle(done.value)
            if self.cut_after is not None and self.requests >= self.cut_after:
                # The cable is pulled mid-upload (the reply is lost) and plugged back.
                self.cut_after = None
                self.cuts += 1
                self.unplug()
                threading.Timer(0.3, self.plug).start()
                return False
            for chunk in smppacket.encode(reply, line_length=BUF_SIZE):
                with contextlib.suppress(OSError):
                    os.write(fd, chunk)
        except Exception:  # a malformed frame: a real device ignores it too
            self._decoder = None
        return True
