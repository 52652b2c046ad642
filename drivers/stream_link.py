"""What a serial port and a TCP connection share: an asyncio stream with a silence timeout."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from floor.errors import DeviceGone, DeviceSilent


class StreamLink:
    """An open byte stream: `read()` raises DeviceGone on EOF or an I/O error and
    DeviceSilent when nothing came for `silence_s`. Subclasses open it in `__aenter__`."""

    READ_SIZE = 4096
    # Errors of the medium that mean the device went away (OSError always does).
    ERRORS: tuple[type[BaseException], ...] = (OSError,)
    EOF = "end of file"

    def __init__(self, name: str, silence_s: float) -> None:
        self.drained = True  # the last read took everything there was (a short read)
        self.name = name
        self._silence = silence_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            # closing a link that already went away may fail; it is closed either way
            with contextlib.suppress(*self.ERRORS):
                await self._writer.wait_closed()
            self._writer = None

    async def read(self) -> bytes:
        """The next chunk of bytes; EOF means the device went away, not a clean end."""
        if self._reader is None:
            raise DeviceGone(self.name, "not open")
        try:
            async with asyncio.timeout(self._silence):
                data = await self._reader.read(self.READ_SIZE)
        except TimeoutError:
            raise DeviceSilent(self.name, self._silence) from None
        except self.ERRORS as exc:
            raise DeviceGone(self.name, str(exc)) from exc
        if not data:
            raise DeviceGone(self.name, self.EOF)
        self.drained = len(data) < self.READ_SIZE
        return data

    def read_now(self) -> bytes:
        """Nothing: a stream's pause between reads is short next to a device's own
        buffering, and asyncio's reader cannot be read without waiting."""
        return b""

    def write(self, data: bytes) -> None:
        if self._writer is None:
            raise DeviceGone(self.name, "not open")
        self._writer.write(data)
