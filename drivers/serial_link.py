"""A serial port as an async byte source: the one place serial bytes meet I/O."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

import serial
import serial_asyncio_fast

from edge.config import SerialPort
from edge.errors import DeviceGone, DeviceSilent

log = logging.getLogger(__name__)

READ_SIZE = 4096


class SerialLink:
    """An open serial port; `read()` raises DeviceGone on EOF/EIO and DeviceSilent on silence."""

    def __init__(self, name: str, port: SerialPort) -> None:
        self.name = name
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> SerialLink:
        try:
            self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=self._port.port, baudrate=self._port.baudrate, exclusive=True
            )
        except (OSError, serial.SerialException, ValueError) as exc:
            raise DeviceGone(self.name, f"cannot open {self._port.port}: {exc}") from exc
        log.info("%s: opened %s at %d baud", self.name, self._port.port, self._port.baudrate)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            # closing a port that already went away may fail; it is closed either way
            with contextlib.suppress(OSError, serial.SerialException):
                await self._writer.wait_closed()
            self._writer = None

    async def read(self) -> bytes:
        """The next chunk of bytes; EOF means the device went away, not a clean end."""
        if self._reader is None:
            raise DeviceGone(self.name, "not open")
        try:
            async with asyncio.timeout(self._port.silence_s):
                data = await self._reader.read(READ_SIZE)
        except TimeoutError:
            raise DeviceSilent(self.name, self._port.silence_s) from None
        except (OSError, serial.SerialException) as exc:
            raise DeviceGone(self.name, str(exc)) from exc
        if not data:
            raise DeviceGone(self.name, "end of file")
        return data

    def write(self, data: bytes) -> None:
        if self._writer is None:
            raise DeviceGone(self.name, "not open")
        self._writer.write(data)
