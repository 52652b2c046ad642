"""A simulated cellular modem on the far side of a pty (tests, demo): it answers the
AT commands the gateway uses as a Quectel EC25 does (TS 27.007/27.005): echo until
`ATE0`, `OK`, the `> ` prompt of `AT+CMGS`, `+CMGS: <mr>`, `+CME ERROR`/`+CMS ERROR`,
and now and then an unsolicited `+CMTI`. What it was asked to send is kept as hex PDUs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drivers.pty_sim import PtyServer

CTRL_Z, ESC = 0x1A, 0x1B


@dataclass
class SimModem:
    sim: bool = True  # a SIM is inserted (else +CME ERROR: 10)
    registered: bool = True  # on the network (else +CREG: 0,0 and +CMS ERROR: 331 on send)
    csq: int = 21  # +CSQ rssi (0-31, 99 unknown)
    fail_sends: int = 0  # the next N sends are refused with +CMS ERROR: <fail_code>
    fail_code: int = 500  # 21: transfer rejected (a SIM out of credit), 50: not subscribed...
    fail_numbers: dict[str, int] = field(default_factory=dict)  # number -> its next N sends refused
    fail_nth: set[int] = field(default_factory=set)  # the n-th send asked for (from 1) is refused
    asked: int = 0
    cmti_every: int = 2  # an unsolicited +CMTI after every Nth send (0: never)
    echo: bool = True
    pdus: list[str] = field(default_factory=list)  # every PDU sent, hex, as written after "> "
    user_data: list[bytes] = field(default_factory=list)  # each SMS's TP-UD, as an SMS gateway hands it over
    sent: list[Sent] = field(default_factory=list)  # each SMS: to whom, how coded, what
    commands: list[str] = field(default_factory=list)
    _line: bytearray = field(default_factory=bytearray)
    _pdu_len: int | None = None  # set while a PDU is awaited after the prompt
    _mr: int = 0

    def feed(self, data: bytes) -> bytes:
        """Bytes from the gateway; the modem's answer."""
        out = bytearray()
        for b in data:
            if self._pdu_len is not None:
                out += self._pdu_byte(b)
                continue
            if self.echo:
                out.append(b)
            if b in (0x0D, 0x0A):
                if self._line:
                    out += self._command(self._line.decode("ascii", "replace").strip())
                self._line.clear()
            elif len(self._line) < 1024:
                self._line.append(b)
        return bytes(out)

    @staticmethod
    def _say(*lines: str) -> bytes:
        return b"".join(f"\r\n{x}\r\n".encode() for x in lines)

    def _command(self, cmd: str) -> bytes:
        self.commands.append(cmd)
        up = cmd.upper()
        if up in ("AT", "AT+CMEE=1", "AT+CMGF=0"):
            return self._say("OK")
        if up in ("ATE0", "ATE1"):
            self.echo = up == "ATE1"
            return self._say("OK")
        if up == "AT+CPIN?":
            return self._say("+CPIN: READY", "OK") if self.sim else self._say("+CME ERROR: 10")
        if up == "AT+CSQ":
            return self._say(f"+CSQ: {self.csq},99", "OK")
        if up == "AT+CREG?":
            return self._say(f"+CREG: 0,{1 if self.registered and self.sim else 0}", "OK")
        if m := re.fullmatch(r"AT\+CMGS=(\d+)", up):
            if not self.registered:
                return self._say("+CMS ERROR: 331")  # no network service
            self._pdu_len = int(m.group(1))
            self._line.clear()
            return b"\r\n> "
        return self._say("ERROR")

    def _pdu_byte(self, b: int) -> bytes:
        if b == ESC:
            self._pdu_len = None
            self._line.clear()
            return self._say("OK")
        if b != CTRL_Z:
            self._line.append(b)
            return b""
        hexpdu = self._line.decode("ascii", "replace")
        length, self._pdu_len = self._pdu_len, None
        self._line.clear()
        try:
            raw = bytes.fromhex(hexpdu)
        except ValueError:
            return self._say("+CMS ERROR: 304")  # invalid PDU parameter
        if length is None or len(raw) != length + 1 + raw[0]:
            return self._say("+CMS ERROR: 304")
        sms = _read(raw)
        self.asked += 1
        if self.asked in self.fail_nth:
            return self._say(f"+CMS ERROR: {self.fail_code}")
        if self.fail_sends > 0:
            self.fail_sends -= 1
            return self._say(f"+CMS ERROR: {self.fail_code}")
        if self.fail_numbers.get(sms.number, 0) > 0:
            self.fail_numbers[sms.number] -= 1
            return self._say(f"+CMS ERROR: {self.fail_code}")
        self.pdus.append(hexpdu)
        self.user_data.append(sms.user_data)
        self.sent.append(sms)
        self._mr = (self._mr + 1) % 256
        out = self._say(f"+CMGS: {self._mr}", "OK")
        if self.cmti_every and len(self.pdus) % self.cmti_every == 0:
            out += self._say(f'+CMTI: "SM",{len(self.pdus)}')
        return out


@dataclass(frozen=True, slots=True)
class Sent:
    """One SMS as the network took it."""

    number: str  # "+8613800138000"
    dcs: int  # 0x00 the GSM alphabet, 0x04 8-bit data, 0x08 UCS-2
    user_data: bytes  # the TP-UD, header included, as an SMS gateway hands it over
    udl: int  # its length as coded: septets for the GSM alphabet, else octets


def _read(raw: bytes) -> Sent:
    """What an SMS-SUBMIT PDU (service-centre address first) sends to whom."""
    at = 1 + raw[0]  # past the SMSC address
    first = raw[at]
    at += 2  # first octet, message reference
    digits, toa = raw[at], raw[at + 1]
    semi = raw[at + 2 : at + 2 + (digits + 1) // 2].hex()
    number = "".join(semi[i + 1] + semi[i] for i in range(0, len(semi), 2))[:digits]
    at += 2 + (digits + 1) // 2
    dcs = raw[at + 1]
    at += 2  # PID, DCS
    vpf = (first >> 3) & 3
    at += {0: 0, 2: 1}.get(vpf, 7)
    udl = raw[at]
    octets = (udl * 7 + 7) // 8 if dcs == 0x00 else udl
    return Sent(("+" if toa == 0x91 else "") + number, dcs, raw[at + 1 : at + 1 + octets], udl)


class PtyModem(PtyServer):
    """A SimModem serving a pty master in a thread."""

    def __init__(self, master: int, modem: SimModem | None = None) -> None:
        self.modem = modem or SimModem()
        super().__init__(master, self.modem.feed)
