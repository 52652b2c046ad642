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
    TRUNCATED = "truncated"
    FRAGMENT = "fragment"
    UNSUPPORTED = "unsupported"
    FORGED = "forged"  # an authenticated value whose authentication failed


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
        self._buf = b""
        self._max = max_line
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes | Rejected]:
        out: list[bytes | Rejected] = []
        # bytes.split does the scanning in C: a receiver's burst is a handful of lines.
        parts = (self._buf + data if self._buf else data).split(b"\n")
        rest = parts.pop()
        limit = self._max
        for part in parts:
            line = part.rstrip(b"\r")
            if self._overflow:
                self._overflow = False
                out.append(Rejected(Reason.TOO_LONG, line[-64:]))
            elif len(line) > limit:
                out.append(Rejected(Reason.TOO_LONG, line[:64]))
            elif line and not line.isspace():
                out.append(line)
        if len(rest) > limit:
            # keep only the tail so memory stays bounded on a stream with no newlines
            self._overflow = True
            rest = rest[-limit:]
        self._buf = rest
        return out


def checked(framer: LineFramer, data: bytes) -> list[Sentence | Rejected]:
    """Frame bytes into lines and check each: the first step every NMEA parser takes."""
    return [item if isinstance(item, Rejected) else check(item) for item in framer.feed(data)]


_FOLDS = tuple((bits, (1 << bits) - 1) for bits in (512, 256, 128, 64, 32, 16, 8))


def _xor(data: bytes) -> int:
    """XOR of all bytes: the sentence as one integer, folded in halves down to a byte
    (a few big-integer operations instead of a Python loop over every byte)."""
    if len(data) > 128:
        c = 0
        for b in data:
            c ^= b
        return c
    x = int.from_bytes(data, "little")
    for bits, mask in _FOLDS:
        if x >> bits:
            x = (x >> bits) ^ (x & mask)
    return x


def sentence(body: str) -> bytes:
    """`GPRMC,...` to `$GPRMC,...*hh\r\n`: what a device (or a simulated one) writes."""
    return f"${body}*{_xor(body.encode('ascii')):02X}\r\n".encode("ascii")


def check(line: bytes) -> Sentence | Rejected:
    """Verify one line's framing and checksum."""
    n = len(line)
    if n > 6 and line[n - 3] == 0x2A and line[0] in b"$!":  # the common `$...*hh`, nothing around it
        fast = _plain(line, line[1 : n - 3], line[n - 2 :])
        if fast is not None:
            return fast
    return _check(line)


def _plain(raw: bytes, body: bytes, given: bytes) -> Sentence | None:
    """The checksum and fields of a plain sentence; None sends it the careful way."""
    try:
        if int(given, 16) != _xor(body):
            return None
        text = body.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    if not text.isprintable():
        return None
    parts = text.split(",")
    address = parts[0]
    if len(address) != 5 or address[0] == "P" or not address.isalnum():
        return None
    return _new_sentence(Sentence, (chr(raw[0]), address[:2], address[2:], tuple(parts[1:]), raw, ""))


_new_sentence = tuple.__new__  # Sentence's own __new__ without its Python-level wrapper


def _check(line: bytes) -> Sentence | Rejected:
    raw = line
    got = _tag_block(line.strip(), raw)
    if isinstance(got, Rejected):
        return got
    tag, line = got
    if not line or line[0] not in b"$!":
        # Tolerate leading noise before the start delimiter (a common serial artefact).
        i = max(line.rfind(b"$"), line.rfind(b"!"))
        if i <= 0:
            return Rejected(Reason.GARBAGE, raw)
        line = line[i:]
    text = _checked_text(line, raw)
    if isinstance(text, Rejected):
        return text
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


def _tag_block(line: bytes, raw: bytes) -> tuple[str, bytes] | Rejected:
    """An IEC 61162-450 tag block (`\\s:...*hh\\`) in front, checked, and the sentence after it."""
    if not line.startswith(b"\\"):
        return "", line
    end = line.find(b"\\", 1)
    if end < 0:
        return Rejected(Reason.MALFORMED, raw, "unterminated tag block")
    tag_bytes = line[1:end]
    if b"*" in tag_bytes:
        body, _, cks = tag_bytes.rpartition(b"*")
        if len(cks) != 2 or cks.upper() != b"%02X" % _xor(body):
            return Rejected(Reason.CHECKSUM, raw, "tag block")
    return tag_bytes.decode("ascii", "replace"), line[end + 1 :]


def _checked_text(line: bytes, raw: bytes) -> str | Rejected:
    """The sentence between its delimiter and its checksum, once the checksum holds."""
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
    return text
