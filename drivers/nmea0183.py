"""NMEA 0183 / IEC 61162-1 framing, sans-IO: bytes in, checked sentences or `Rejected` out.

A noisy serial line is data, not an exception: every line that is not a sentence
with a valid checksum comes back as a typed `Rejected(reason, raw)` to be counted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

# IEC 61162-1 caps a sentence at 82 characters; AIS with tag blocks and vendor
# extensions run longer, so framing allows more but never an unbounded line.
MAX_LINE = 512


class Reason(enum.StrEnum):
    """Why a line was rejected."""

    TOO_LONG = "too_long"
    GARBAGE = "garbage"
    NO_CHECKSUM = "no_checksum"
    CHECKSUM = "checksum"
    MALFORMED = "malformed"
    BAD_VALUE = "bad_value"
    BAD_DATE = "bad_date"
    TRUNCATED = "truncated"
    FRAGMENT = "fragment"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line or message that could not be trusted, with why."""

    reason: Reason
    raw: bytes
    detail: str = ""


class Sentence(NamedTuple):
    """A checksum-verified sentence: `$GNRMC,...` has talker `GN`, type `RMC`.

    A NamedTuple, not a frozen dataclass: one is made per line, and a frozen
    dataclass's __init__ costs more than the rest of the sentence's checking."""

    start: str  # "$" or "!"
    talker: str
    type: str
    fields: tuple[str, ...]
    raw: bytes
    tag: str = ""  # the IEC 61162-450 tag block, without its backslashes


class LineFramer:
    """Splits a byte stream into lines; an overlong line is cut off and rejected."""

    __slots__ = ("_buf", "_max", "_overflow")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._max = max_line
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes | Rejected]:
        out: list[bytes | Rejected] = []
        buf = self._buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl]).rstrip(b"\r")
            start = nl + 1
            if self._overflow:
                self._overflow = False
                out.append(Rejected(Reason.TOO_LONG, line[-64:]))
            elif len(line) > self._max:
                out.append(Rejected(Reason.TOO_LONG, line[:64]))
            elif line.strip():
                out.append(line)
        del buf[:start]
        if len(buf) > self._max:
            # keep only the tail so memory stays bounded on a stream with no newlines
            self._overflow = True
            del buf[: len(buf) - self._max]
        return out


def checked(framer: LineFramer, data: bytes) -> list[Sentence | Rejected]:
    """Frame bytes into lines and check each: the first step every NMEA parser takes."""
    return [item if isinstance(item, Rejected) else check(item) for item in framer.feed(data)]


def _xor(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b
    return c


def check(line: bytes) -> Sentence | Rejected:
    """Verify one line's framing and checksum."""
    raw = line
    line = line.strip()
    tag = ""
    if line.startswith(b"\\"):
        end = line.find(b"\\", 1)
        if end < 0:
            return Rejected(Reason.MALFORMED, raw, "unterminated tag block")
        tag_bytes = line[1:end]
        if b"*" in tag_bytes:
            body, _, cks = tag_bytes.rpartition(b"*")
            if len(cks) != 2 or cks.upper() != b"%02X" % _xor(body):
                return Rejected(Reason.CHECKSUM, raw, "tag block")
        tag = tag_bytes.decode("ascii", "replace")
        line = line[end + 1 :]
    if not line or line[0] not in b"$!":
        # Tolerate leading noise before the start delimiter (a common serial artefact).
        i = max(line.rfind(b"$"), line.rfind(b"!"))
        if i <= 0:
            return Rejected(Reason.GARBAGE, raw)
        line = line[i:]
    star = line.rfind(b"*")
    if star < 0:
        return Rejected(Reason.NO_CHECKSUM, raw)
    body = line[1:star]
    given = line[star + 1 : star + 3]
    if len(given) != 2:
        return Rejected(Reason.NO_CHECKSUM, raw)
    try:
        want = int(given, 16)
    except ValueError:
        return Rejected(Reason.CHECKSUM, raw, "checksum is not hex")
    if _xor(body) != want:
        return Rejected(Reason.CHECKSUM, raw)
    # Anything after the checksum (USCG receivers append metadata fields) is ignored.
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return Rejected(Reason.GARBAGE, raw, "non-ASCII")
    if not text.isprintable():
        return Rejected(Reason.GARBAGE, raw, "control characters")
    parts = text.split(",")
    address = parts[0]
    if not address.isalnum() or not address.isascii():
        return Rejected(Reason.MALFORMED, raw, f"address field {address!r}")
    if address.startswith("P"):
        talker, typ = "P", address[1:]
    elif len(address) == 5:
        talker, typ = address[:2], address[2:]
    else:  # vendor sentences outside the standard scheme, e.g. Unicore's $SNRSTAT
        talker, typ = "", address
    return Sentence(chr(line[0]), talker, typ, tuple(parts[1:]), raw, tag)
