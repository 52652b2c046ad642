"""A simulated device on the far side of a pty (tests, demo): a thread that hands what the
gateway writes to the device's `feed` and writes back its answer, plus what the device
says on its own (`inject`)."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import Self


class PtyServer:
    def __init__(self, master: int, feed: Callable[[bytes], bytes]) -> None:
        self.master = master
        self._feed = feed
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def inject(self, data: bytes) -> None:
        """Bytes the device sends unasked (a report, a message)."""
        with contextlib.suppress(OSError):
            os.write(self.master, data)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
                with self.lock:
                    answer = self._feed(data)
                if answer:
                    os.write(self.master, answer)
                continue
            self._stop.wait(0.1)  # unplugged: nothing to serve until replugged

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
