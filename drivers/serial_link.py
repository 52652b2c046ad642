"""A serial port as an async byte source: the one place serial bytes meet I/O."""

from __future__ import annotations

import logging
import os

import serial
import serial_asyncio_fast

from drivers.stream_link import StreamLink
from floor.config import SerialPort
from floor.errors import DeviceGone

log = logging.getLogger(__name__)


def why(exc: BaseException) -> str:
    """What went wrong, said once: pyserial wraps an OSError's text in its own ("[Errno 2]
    could not open port X: [Errno 2] No such file or directory: 'X'")."""
    errno = getattr(exc, "errno", None)
    if errno is None and exc.args and isinstance(exc.args[0], int):
        errno = exc.args[0]
    return os.strerror(errno) if isinstance(errno, int) and errno > 0 else str(exc)


class SerialLink(StreamLink):
    """An open serial port (pyserial, through pyserial-asyncio-fast)."""

    ERRORS = (OSError, serial.SerialException)

    def __init__(self, name: str, port: SerialPort) -> None:
        super().__init__(name, port.silence_s)
        self._port = port

    async def __aenter__(self) -> SerialLink:
        try:
            self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=self._port.port, baudrate=self._port.baudrate, exclusive=True
            )
        except (OSError, serial.SerialException, ValueError) as exc:
            raise DeviceGone(self.name, f"cannot open {self._port.port}: {why(exc)}") from exc
        log.info("%s: opened %s at %d baud", self.name, self._port.port, self._port.baudrate)
        return self
