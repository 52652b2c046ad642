"""The AT command dialogue of a cellular modem (3GPP TS 27.007 / 27.005), sans-IO: bytes
from the port in, events out; what each answer means. No I/O, no clock: the modem
(modem.py) owns the port and the timeouts.

A modem answers a command with information lines and one final result code (`OK`,
`ERROR`, `+CME ERROR: n`, `+CMS ERROR: n`); `AT+CMGS` first asks for the PDU with a
`> ` prompt that has no line end. Between answers it may speak unasked (unsolicited
result codes: `+CMTI` a new SMS, `RING`, `+CREG: n` a registration change when
`AT+CREG=1`): those are set apart, never taken for an answer.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MAX_LINE = 4096  # bytes without a line end: garbage, dropped (the command waiting times out)
UNSOLICITED = ("+CMTI:", "+CDSI:", "+CMT:", "+CBM:", "+CDS:", "RING", "+QIND:", "+CUSD:", "^")
_CREG_URC = re.compile(r"^\+CREG: ?\d$")  # a registration change, told unasked (AT+CREG=1)
_FINAL_ERROR = re.compile(r"^(ERROR|\+CME ERROR: ?(.*)|\+CMS ERROR: ?(.*)|NO CARRIER)$")
_CSQ = re.compile(r"^\+CSQ: ?(\d+),(\d+)$")
_CREG = re.compile(r"^\+CREG: ?\d+,(\d+)")
_CMGS = re.compile(r"^\+CMGS: ?(\d+)$")


class Reason(enum.StrEnum):
    """Why a command or an SMS was refused (counted in the status)."""

    NO_SIM = "no_sim"
    NO_NETWORK = "no_network"
    CMS_ERROR = "cms_error"
    CME_ERROR = "cme_error"
    ERROR = "error"
    TIMEOUT = "timeout"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Line:
    """A line of an answer: information, or its final result code."""

    text: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """The `> ` of AT+CMGS: the modem waits for the PDU."""


@dataclass(frozen=True, slots=True)
class Unsolicited:
    text: str


Event = Line | Prompt | Unsolicited


@dataclass(frozen=True, slots=True)
class Final:
    """An answer's last line: OK, or a refusal with its reason."""

    ok: bool
    reason: Reason | None = None
    text: str = ""


class AtReader:
    """Bytes from the modem's port to events, whatever the chunks."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        out: list[Event] = []
        while True:
            rest = self._buf.lstrip(b"\r\n")
            if rest.startswith(b">"):  # the PDU prompt has no line end
                self._buf = rest[1:].lstrip(b" ")
                out.append(Prompt())
                continue
            line, sep, tail = self._buf.partition(b"\n")
            if not sep:
                break
            self._buf = tail
            text = line.strip(b"\r ").decode("ascii", "replace")
            if not text:
                continue
            if text.startswith(UNSOLICITED) or _CREG_URC.match(text):
                out.append(Unsolicited(text))
            else:
                out.append(Line(text))
        if len(self._buf) > MAX_LINE:
            self._buf = b""
        return out


def command(cmd: str) -> bytes:
    return cmd.encode("ascii") + b"\r"


def final(text: str) -> Final | None:
    """The final result code this line is, or None for an information line."""
    if text == "OK":
        return Final(True)
    if m := _FINAL_ERROR.match(text):
        if m.group(3) is not None:
            return Final(False, Reason.CMS_ERROR, text)
        if m.group(2) is not None:
            return Final(False, Reason.CME_ERROR, text)
        return Final(False, Reason.ERROR, text)
    return None


def sim_ready(lines: list[str]) -> bool:
    """`AT+CPIN?` answered READY."""
    return any("READY" in line for line in lines)


def signal_dbm(lines: list[str]) -> tuple[bool, int | None]:
    """`AT+CSQ`: (answered, dBm or None when not known or not detectable)."""
    for line in lines:
        if m := _CSQ.match(line):
            rssi = int(m.group(1))
            return True, None if rssi == 99 else -113 + 2 * min(rssi, 31)
    return False, None


def registration(lines: list[str]) -> int | None:
    """`AT+CREG?`: the <stat> (1 home, 5 roaming), or None."""
    for line in lines:
        if m := _CREG.match(line):
            return int(m.group(1))
    return None


def message_reference(lines: list[str]) -> int | None:
    """`AT+CMGS`: the message reference the network gave the SMS, or None."""
    for line in lines:
        if m := _CMGS.match(line):
            return int(m.group(1))
    return None


# What a refusal says of the SIM and the network (3GPP TS 27.005 3.2.5 for +CMS, TS 27.007
# 9.2 for +CME), as a cause a person can act on. A prepaid SIM without credit is refused by
# most operators' SMS centres with 21 "short message transfer rejected"; barring and a
# service not subscribed are the operator's decision; the rest is the network's state.
CMS_CAUSES = {
    "21": "no_credit",
    "8": "barred",
    "10": "barred",
    "29": "barred",
    "50": "barred",
    "331": "not_registered",
    "330": "no_smsc",
    "38": "network",
    "41": "network",
    "42": "network",
    "47": "network",
    "332": "network",
}
CME_CAUSES = {"10": "no_sim", "11": "no_sim", "12": "no_sim", "13": "no_sim", "30": "not_registered"}


def cause(reason: Reason, text: str) -> str:
    """Why a command or an SMS was refused, in words a person can act on."""
    code = text.rpartition(":")[2].strip()
    if reason == Reason.CMS_ERROR:
        return CMS_CAUSES.get(code, "refused")
    if reason == Reason.CME_ERROR:
        return CME_CAUSES.get(code, "refused")
    return {Reason.NO_SIM: "no_sim", Reason.NO_NETWORK: "not_registered", Reason.TIMEOUT: "timeout"}.get(
        reason, "refused"
    )
