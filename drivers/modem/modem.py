"""A cellular modem's AT command port (3GPP TS 27.007 / 27.005, as a Quectel EC25's),
for sending SMS in PDU mode. One command at a time; every answer read to its final
result code; unsolicited lines (`+CMTI`, `RING`...) counted and set aside.

`run()` opens and sets up the modem (echo off, numeric errors, PDU mode), checks the
SIM and the network, then polls signal and registration every POLL_S; it raises
`DeviceGone` when the port goes or stops answering, so a supervisor reopens it.
`send(part)` writes one SMS-SUBMIT after the `> ` prompt and returns the message
reference of `+CMGS`; a refusal raises `ModemError` with a reason that is counted.
What the bytes mean is at.py's (sans-IO); the port is the serial link every driver uses.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from typing import Any

from drivers.modem import at
from drivers.modem.at import Final, Line, Prompt, Reason, Unsolicited
from drivers.modem.pdu import Part
from drivers.serial_link import SerialLink
from floor.config import SerialPort
from floor.errors import DeviceGone, DeviceSilent, Refusal

log = logging.getLogger(__name__)

POLL_S = 30.0
CTRL_Z = b"\x1a"
ESC = b"\x1b"


class State(enum.StrEnum):
    CLOSED = "closed"
    NO_SIM = "no_sim"
    NO_NETWORK = "no_network"
    READY = "ready"


_GONE = Final(False, Reason.GONE, "the port closed")


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
        self.cause: str | None = None  # why it cannot send (no_credit, barred, not_registered...)
        self._events: asyncio.Queue[Line | Prompt | Final] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._link: SerialLink | None = None
        self.ready = asyncio.Event()

    # -- the session -------------------------------------------------------------------------

    async def run(self) -> None:
        """Open, set up and poll the modem until its port goes or stops answering
        (DeviceGone: a supervisor reopens it)."""
        # a modem says nothing unasked for long spells: silence is judged by its answers
        port = SerialPort(port=self.port, baudrate=self.baudrate, silence_s=10 * POLL_S)
        failure: DeviceGone | None = None
        try:
            async with SerialLink(self.name, port) as link:
                self._link = link
                async with asyncio.TaskGroup() as tg:
                    pump = tg.create_task(self._pump(link), name=f"{self.name}.read")
                    try:
                        await self._session()
                    except ModemError as exc:
                        failure = DeviceGone(self.name, str(exc))
                    pump.cancel()
        finally:
            self._link = None
            self.state = State.CLOSED
            self.ready.clear()
        if failure is not None:
            raise failure

    async def _session(self) -> None:
        for setup in ("AT", "ATE0", "AT+CMEE=1", "AT+CMGF=0"):
            await self.command(setup)
        log.info("%s: modem on %s answers", self.name, self.port)
        while True:
            await self._check()
            await asyncio.sleep(POLL_S)

    async def _pump(self, link: SerialLink) -> None:
        """What the port says, parsed; the end of the port is an answer to whoever waits."""
        reader = at.AtReader()
        try:
            while True:
                for ev in reader.feed(await link.read()):
                    if isinstance(ev, Unsolicited):
                        self.unsolicited += 1  # a notice, not an answer (a new SMS, a ring...)
                    elif isinstance(ev, Line) and (done := at.final(ev.text)) is not None:
                        self._events.put_nowait(done)
                    else:
                        self._events.put_nowait(ev)
        except (DeviceGone, DeviceSilent):
            self._events.put_nowait(_GONE)

    async def _check(self) -> None:
        """SIM, registration and signal; the state follows."""
        try:
            sim = await self.command("AT+CPIN?")
        except ModemError as exc:
            if exc.reason == Reason.TIMEOUT:
                raise
            self._set(State.NO_SIM, f"SIM: {exc}")
            return
        if not at.sim_ready(sim):
            self._set(State.NO_SIM, f"SIM: {' '.join(sim) or 'no answer'}")
            return
        answered, dbm = at.signal_dbm(await self.command("AT+CSQ"))
        if answered:
            self.rssi_dbm = dbm
        if (stat := at.registration(await self.command("AT+CREG?"))) is not None:
            self.registration = stat
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
        if state == State.NO_SIM:
            self.cause = "no_sim"
        elif state == State.NO_NETWORK:
            self.cause = "not_registered"
        elif self.cause in ("no_sim", "not_registered"):
            self.cause = None  # back: what a send says next decides
        (self.ready.set if state == State.READY else self.ready.clear)()

    # -- commands ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._link is None:
            raise ModemError(Reason.GONE, "not open")
        self._link.write(data)

    async def command(self, cmd: str) -> list[str]:
        """Run one AT command; its information lines (the echo dropped). Raises ModemError."""
        async with self._lock:
            self._drain()
            self._write(at.command(cmd))
            return await self._answer(cmd)

    def _drain(self) -> None:
        while not self._events.empty():
            self._events.get_nowait()  # late lines of a command that timed out

    async def _answer(self, cmd: str) -> list[str]:
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    ev = await self._events.get()
                    if isinstance(ev, Final):
                        if ev.ok:
                            return lines
                        raise self._refused(ev)
                    if isinstance(ev, Line) and ev.text != cmd:  # not the echo, not a stray prompt
                        lines.append(ev.text)
        except TimeoutError:
            self.errors[Reason.TIMEOUT] += 1
            raise ModemError(Reason.TIMEOUT, f"{cmd}: no answer in {self.timeout_s:.0f} s") from None

    def _refused(self, ev: Final) -> ModemError:
        reason = ev.reason or Reason.ERROR
        if reason != Reason.GONE:
            self.errors[reason] += 1
            self.last_error = ev.text
        return ModemError(reason, ev.text)

    def refused_send(self, exc: ModemError) -> None:
        """A send was refused: the cause stands until a send goes through."""
        if exc.reason != Reason.GONE:
            self.cause = at.cause(exc.reason, exc.detail)

    async def send(self, part: Part) -> int:
        """One SMS-SUBMIT; the message reference the network gave it (+CMGS). A refusal
        raises ModemError and leaves its cause (no_credit, barred...) in the status."""
        try:
            return await self._submit(part)
        except ModemError as exc:
            self.refused_send(exc)
            raise

    async def _submit(self, part: Part) -> int:
        if self.state != State.READY:
            raise ModemError(Reason(self.state.value) if self.state != State.CLOSED else Reason.GONE)
        async with self._lock:
            self._drain()
            cmd = f"AT+CMGS={part.length}"
            self._write(at.command(cmd))
            await self._await_prompt(cmd)
            self._write(part.hex.encode("ascii") + CTRL_Z)
            ref = at.message_reference(await self._answer(cmd))
            if ref is None:
                self.errors[Reason.ERROR] += 1
                raise ModemError(Reason.ERROR, "OK without +CMGS")
            self.sent += 1
            self.cause = None  # it takes messages again
            return ref

    async def _await_prompt(self, cmd: str) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                while not isinstance(ev := await self._events.get(), Prompt):
                    if isinstance(ev, Final):
                        raise self._refused(ev)  # refused at once (no network...), or gone
        except TimeoutError:
            self._write(ESC)  # abandon the prompt, should it come late
            self.errors[Reason.TIMEOUT] += 1
            raise ModemError(Reason.TIMEOUT, f"{cmd}: no > prompt in {self.timeout_s:.0f} s") from None

    def snapshot(self) -> dict[str, Any]:
        failing = self.state == State.READY and self.cause is not None
        return {
            "port": self.port,
            "state": "failing" if failing else self.state.value,  # registered, but its sends refused
            "cause": self.cause,
            "rssi_dbm": self.rssi_dbm,
            "registration": self.registration,
            "sent": self.sent,
            "errors": dict(self.errors),
            "unsolicited": self.unsolicited,
            "last_error": self.last_error,
        }
