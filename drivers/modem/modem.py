"""A cellular modem's AT command port (3GPP TS 27.007 / 27.005, as a Quectel EC25's),
for sending SMS in PDU mode. One command at a time; every answer read to its final
result code; unsolicited lines (`+CMTI`, `RING`...) counted and set aside.

`run()` opens and sets up the modem (echo off, numeric errors, PDU mode), checks the
SIM and the network, then polls signal and registration every POLL_S; it raises
`DeviceGone` when the port goes or stops answering, so a supervisor reopens it.
`send(part)` writes one SMS-SUBMIT after the `> ` prompt and returns the message
reference of `+CMGS`; a refusal raises `ModemError` with a reason that is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections import Counter
from typing import Any

import serial
import serial_asyncio_fast

from drivers.modem.pdu import Part
from floor.errors import DeviceGone, Refusal

log = logging.getLogger(__name__)

POLL_S = 30.0
CTRL_Z = b"\x1a"
ESC = b"\x1b"
FINAL_OK = "OK"
_ERRORS = re.compile(r"^(ERROR|\+CME ERROR: ?(.*)|\+CMS ERROR: ?(.*)|NO CARRIER)$")
UNSOLICITED = ("+CMTI:", "+CDSI:", "+CMT:", "+CBM:", "+CDS:", "RING", "+QIND:", "+CUSD:", "^")
_CREG_URC = re.compile(r"^\+CREG: ?\d$")  # a registration change, told unasked (AT+CREG=1)
PROMPT = "\x00prompt"  # the reader's mark for the "> " of AT+CMGS
GONE = "\x00gone"
_CSQ = re.compile(r"^\+CSQ: ?(\d+),(\d+)$")
_CREG = re.compile(r"^\+CREG: ?\d+,(\d+)")
_CMGS = re.compile(r"^\+CMGS: ?(\d+)$")


class State(enum.StrEnum):
    CLOSED = "closed"
    NO_SIM = "no_sim"
    NO_NETWORK = "no_network"
    READY = "ready"


class Reason(enum.StrEnum):
    """Why a command or an SMS was refused (counted in the status)."""

    NO_SIM = "no_sim"
    NO_NETWORK = "no_network"
    CMS_ERROR = "cms_error"
    CME_ERROR = "cme_error"
    ERROR = "error"
    TIMEOUT = "timeout"
    GONE = "gone"


class ModemError(Refusal):
    """A command or an SMS the modem refused or never answered (`reason` a Reason)."""

    reason: Reason

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(reason, detail)


class Modem:
    def __init__(self, name: str, port: str, baudrate: int, *, timeout_s: float = 30.0) -> None:
        self.name = name
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.state = State.CLOSED
        self.rssi_dbm: int | None = None  # from +CSQ (None: not known or not detectable)
        self.registration: int | None = None  # +CREG <stat>: 1 home, 5 roaming
        self.sent = 0
        self.errors: Counter[str] = Counter()
        self.unsolicited = 0
        self.last_error = ""
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.Event()

    # -- the session -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=self.port, baudrate=self.baudrate, exclusive=True
            )
        except (OSError, serial.SerialException, ValueError) as exc:
            raise DeviceGone(self.name, f"cannot open {self.port}: {exc}") from exc
        pump = asyncio.get_running_loop().create_task(self._read(reader))
        try:
            for setup in ("AT", "ATE0", "AT+CMEE=1", "AT+CMGF=0"):
                await self.command(setup)
            log.info("%s: modem on %s answers", self.name, self.port)
            while True:
                await self._check()
                await asyncio.sleep(POLL_S)
        except ModemError as exc:
            raise DeviceGone(self.name, str(exc)) from exc
        finally:
            self.state = State.CLOSED
            self.ready.clear()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, serial.SerialException):
                await pump
            self._writer.close()
            self._writer = None

    async def _check(self) -> None:
        """SIM, registration and signal; the state follows."""
        try:
            sim = await self.command("AT+CPIN?")
        except ModemError as exc:
            if exc.reason == Reason.TIMEOUT:
                raise
            self._set(State.NO_SIM, f"SIM: {exc}")
            return
        if not any("READY" in line for line in sim):
            self._set(State.NO_SIM, f"SIM: {' '.join(sim) or 'no answer'}")
            return
        for line in await self.command("AT+CSQ"):
            if m := _CSQ.match(line):
                rssi = int(m.group(1))
                self.rssi_dbm = None if rssi == 99 else -113 + 2 * min(rssi, 31)
        for line in await self.command("AT+CREG?"):
            if m := _CREG.match(line):
                self.registration = int(m.group(1))
        if self.registration in (1, 5):
            self._set(State.READY, "")
        else:
            self._set(State.NO_NETWORK, f"not registered (+CREG stat {self.registration})")

    def _set(self, state: State, why: str) -> None:
        if state != self.state:
            (log.info if state == State.READY else log.warning)("%s: modem %s %s", self.name, state, why)
            if state == State.NO_SIM:
                self.errors[Reason.NO_SIM] += 1
            elif state == State.NO_NETWORK:
                self.errors[Reason.NO_NETWORK] += 1
        self.state = state
        self.last_error = why or self.last_error
        (self.ready.set if state == State.READY else self.ready.clear)()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buf = b""
        while True:
            chunk = await reader.read(1024)
            if not chunk:
                await self._lines.put(GONE)
                return
            buf += chunk
            while True:
                if buf.lstrip(b"\r\n").startswith(b">"):  # the PDU prompt has no line end
                    buf = buf.lstrip(b"\r\n")[1:].lstrip(b" ")
                    await self._lines.put(PROMPT)
                    continue
                line, sep, rest = buf.partition(b"\n")
                if not sep:
                    break
                buf = rest
                text = line.strip(b"\r ").decode("ascii", "replace")
                if not text:
                    continue
                if text.startswith(UNSOLICITED) or _CREG_URC.match(text):
                    self.unsolicited += 1  # a notice, not an answer (a new SMS, a ring...)
                    continue
                await self._lines.put(text)
            if len(buf) > 4096:
                buf = b""  # garbage without line ends: dropped, the command times out

    # -- commands ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._writer is None:
            raise ModemError(Reason.GONE, "not open")
        self._writer.write(data)

    async def command(self, cmd: str) -> list[str]:
        """Run one AT command; its information lines (the echo dropped). Raises ModemError."""
        async with self._lock:
            self._drain()
            self._write(cmd.encode("ascii") + b"\r")
            return await self._answer(cmd)

    def _drain(self) -> None:
        while not self._lines.empty():
            self._lines.get_nowait()  # late lines of a command that timed out

    async def _answer(self, cmd: str) -> list[str]:
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    line = await self._lines.get()
                    if line == GONE:
                        raise ModemError(Reason.GONE, "the port closed")
                    if line in (cmd, PROMPT):
                        continue  # the echo, a stray prompt
                    if line == FINAL_OK:
                        return lines
                    if m := _ERRORS.match(line):
                        raise self._refused(m, line)
                    lines.append(line)
        except TimeoutError:
            self.errors[Reason.TIMEOUT] += 1
            raise ModemError(Reason.TIMEOUT, f"{cmd}: no answer in {self.timeout_s:.0f} s") from None

    def _refused(self, m: re.Match[str], line: str) -> ModemError:
        if m.group(3) is not None:
            reason = Reason.CMS_ERROR
        elif m.group(2) is not None:
            reason = Reason.CME_ERROR
        else:
            reason = Reason.ERROR
        self.errors[reason] += 1
        self.last_error = line
        return ModemError(reason, line)

    async def send(self, part: Part) -> int:
        """One SMS-SUBMIT; the message reference the network gave it (+CMGS)."""
        if self.state != State.READY:
            raise ModemError(Reason(self.state.value) if self.state != State.CLOSED else Reason.GONE)
        async with self._lock:
            self._drain()
            cmd = f"AT+CMGS={part.length}"
            self._write(cmd.encode("ascii") + b"\r")
            await self._await_prompt(cmd)
            self._write(part.hex.encode("ascii") + CTRL_Z)
            for line in await self._answer(cmd):
                if m := _CMGS.match(line):
                    self.sent += 1
                    return int(m.group(1))
            self.errors[Reason.ERROR] += 1
            raise ModemError(Reason.ERROR, "OK without +CMGS")

    async def _await_prompt(self, cmd: str) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                while (line := await self._lines.get()) != PROMPT:
                    if line == GONE:
                        raise ModemError(Reason.GONE, "the port closed")
                    if m := _ERRORS.match(line):
                        raise self._refused(m, line)  # refused at once (no network...)
        except TimeoutError:
            self._write(ESC)  # abandon the prompt, should it come late
            self.errors[Reason.TIMEOUT] += 1
            raise ModemError(Reason.TIMEOUT, f"{cmd}: no > prompt in {self.timeout_s:.0f} s") from None

    def snapshot(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "state": self.state.value,
            "rssi_dbm": self.rssi_dbm,
            "registration": self.registration,
            "sent": self.sent,
            "errors": dict(self.errors),
            "unsolicited": self.unsolicited,
            "last_error": self.last_error,
        }
