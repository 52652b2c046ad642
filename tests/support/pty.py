"""A serial device on a pty pair (stdlib only: the deployment test runs it inside the machine)."""

from __future__ import annotations

import contextlib
import os
import threading
import tty
from pathlib import Path


class Pty:
    """A serial device on a pty pair, reached by the gateway through a stable symlink."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.slave = -1
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_suffix(".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self.slave))
        os.replace(tmp, self.link)

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self.slave = -1

    def replug(self) -> None:
        self.unplug()
        self.plug()

    def write(self, data: bytes, chunk: int = 4096) -> None:
        """Write all of `data` (blocks while the reader is slower, as a real UART would)."""
        view = memoryview(data)
        while view:
            n = os.write(self.master, view[:chunk])
            view = view[n:]

    def write_in_thread(self, data: bytes) -> threading.Thread:
        t = threading.Thread(target=self.write, args=(data,), daemon=True)
        t.start()
        return t
