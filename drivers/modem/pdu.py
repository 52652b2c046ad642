"""SMS-SUBMIT PDUs (3GPP TS 23.040): 8-bit data for the compact signed form, and text a
phone shows (the GSM 7-bit alphabet, or UCS-2 for anything else, Chinese included),
split over concatenated parts when it does not fit one.

Sans-IO: bytes or text in, (length, hex) out, as `AT+CMGS=<length>` in PDU mode (3GPP TS
27.005 section 3.5.1) wants them: `length` counts the TPDU's octets, without the
service-centre address in front (here one octet, 00: the SIM's own SMS centre).
Concatenated parts carry a 16-bit reference (user data header IEI 08), so the
references of one gateway's messages do not repeat for 65,536 messages; a receiver
keys parts by sender, reference and count (`Reassembly`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from drivers.modem import gsm7

MAX_UD = 140  # octets of user data one SMS carries
CONCAT8_UDH = 6  # UDHL + IEI 00 (8-bit reference) + IEDL + ref + total + seq
CONCAT16_UDH = 7  # UDHL + IEI 08 (16-bit reference) + IEDL + ref(2) + total + seq
MAX_PARTS = 255
DCS_GSM7 = 0x00  # general data coding, the GSM 7-bit default alphabet
DCS_8BIT = 0x04  # general data coding, no class, 8-bit data
DCS_UCS2 = 0x08  # general data coding, UCS-2 (UTF-16BE in the basic plane)
VP_1_DAY = 0xA7  # relative validity period: 24 hours (TS 23.040 9.2.3.12.1)
GSM7_ONE = 160  # septets in one SMS
GSM7_PART = (MAX_UD - CONCAT16_UDH) * 8 // 7  # septets in a part after the header: 152
UCS2_ONE = MAX_UD // 2  # characters in one SMS: 70
UCS2_PART = (MAX_UD - CONCAT16_UDH) // 2  # ...in a part after the header: 66


class PduError(ValueError):
    """A number or a payload that cannot go out as an SMS."""


@dataclass(frozen=True, slots=True)
class Part:
    length: int  # the TPDU octets: AT+CMGS=<length>
    hex: str  # what is written after the "> " prompt (then Ctrl-Z)
    user_data: bytes  # the TP-UD, user data header included


def address(number: str) -> bytes:
    """TP-DA: digit count, type of address, semi-octets (an odd count padded with F)."""
    international = number.startswith("+")
    digits = number[1:] if international else number
    if not digits.isdigit() or not 1 <= len(digits) <= 20:
        raise PduError(f"not a phone number: {number!r} (digits, with an optional leading +)")
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes([len(digits), 0x91 if international else 0x81]) + bytes.fromhex(swapped)


def split(data: bytes) -> list[bytes]:
    """The user data of each part: one SMS, or chunks that leave room for the
    concatenation header."""
    if len(data) <= MAX_UD:
        return [data]
    room = MAX_UD - CONCAT16_UDH
    return [data[i : i + room] for i in range(0, len(data), room)]


def _udh(ref: int, total: int, seq: int) -> bytes:
    return bytes([6, 0x08, 4, (ref >> 8) & 0xFF, ref & 0xFF, total, seq])


def _tpdu(da: bytes, dcs: int, udl: int, ud: bytes, *, udh: bool) -> Part:
    first = 0x01 | 0x10 | (0x40 if udh else 0)  # SMS-SUBMIT, relative validity, UDHI
    tpdu = bytes([first, 0x00]) + da + bytes([0x00, dcs, VP_1_DAY, udl]) + ud
    return Part(len(tpdu), ("00" + tpdu.hex()).upper(), ud)


def submit(number: str, data: bytes, ref: int) -> list[Part]:
    """The SMS-SUBMIT parts carrying `data` (8-bit) to `number`; several, each with a
    concatenation header (16-bit reference `ref`), when it does not fit one."""
    if not data:
        raise PduError("nothing to send")
    da = address(number)
    chunks = split(data)
    if len(chunks) > MAX_PARTS:
        raise PduError(f"{len(data)} bytes need more than {MAX_PARTS} parts")
    many = len(chunks) > 1
    parts = []
    for i, chunk in enumerate(chunks):
        ud = (_udh(ref, len(chunks), i + 1) if many else b"") + chunk
        parts.append(_tpdu(da, DCS_8BIT, len(ud), ud, udh=many))
    return parts


def text_parts(text: str) -> int:
    """How many SMS `text` takes."""
    values = gsm7.septets(text)
    return len(_gsm7_chunks(values) if values is not None else _ucs2_chunks(text))


def _gsm7_chunks(values: list[int]) -> list[list[int]]:
    """Septets in SMS-sized chunks, never splitting an escape from what it escapes."""
    if len(values) <= GSM7_ONE:
        return [values]
    out: list[list[int]] = []
    while values:
        cut = GSM7_PART
        if len(values) > cut and values[cut - 1] == gsm7.ESCAPE:
            cut -= 1
        out.append(values[:cut])
        values = values[cut:]
    return out


def _ucs2_chunks(text: str) -> list[str]:
    """Text in SMS-sized chunks of UCS-2, never splitting a character."""
    if len(text.encode("utf-16-be")) <= MAX_UD:
        return [text]
    chunks: list[str] = []
    current = ""
    for ch in text:
        if len((current + ch).encode("utf-16-be")) > 2 * UCS2_PART:
            chunks.append(current)
            current = ""
        current += ch
    return [*chunks, current] if current else chunks


def submit_text(number: str, text: str, ref: int) -> list[Part]:
    """The SMS-SUBMIT parts showing `text` on a phone: the GSM 7-bit alphabet when every
    character is in it (160 in one SMS), else UCS-2 (70); concatenated past that."""
    if not text:
        raise PduError("nothing to send")
    da = address(number)
    values = gsm7.septets(text)
    if values is not None:
        septets = _gsm7_chunks(values)
        total = len(septets)
    else:
        units = _ucs2_chunks(text)
        total = len(units)
    if total > MAX_PARTS:
        raise PduError(f"{len(text)} characters need more than {MAX_PARTS} parts")
    many = total > 1
    parts = []
    for i in range(total):
        head = _udh(ref, total, i + 1) if many else b""
        if values is not None:
            chunk = septets[i]
            fill = (7 - (len(head) * 8) % 7) % 7
            ud = head + gsm7.pack(chunk, skip_bits=fill)
            udl = (len(head) * 8 + fill) // 7 + len(chunk)  # septets, the header counted
            parts.append(_tpdu(da, DCS_GSM7, udl, ud, udh=many))
        else:
            ud = head + units[i].encode("utf-16-be")
            parts.append(_tpdu(da, DCS_UCS2, len(ud), ud, udh=many))
    return parts


def concat_header(ud: bytes) -> tuple[int, int, int] | None:
    """(reference, parts, this part) of a part's concatenation header (8-bit or 16-bit
    reference), or None."""
    if len(ud) > CONCAT8_UDH and ud[:3] == b"\x05\x00\x03" and 1 <= ud[5] <= ud[4]:
        return ud[3], ud[4], ud[5]
    if len(ud) > CONCAT16_UDH and ud[:3] == b"\x06\x08\x04" and 1 <= ud[6] <= ud[5]:
        return (ud[3] << 8) | ud[4], ud[5], ud[6]
    return None


def header_size(ud: bytes) -> int:
    return CONCAT16_UDH if ud[1:2] == b"\x08" else CONCAT8_UDH


def reassemble(parts: list[bytes]) -> bytes:
    """The data of one message from its parts' user data (in any order)."""
    if len(parts) == 1 and not concat_header(parts[0]):
        return parts[0]
    pieces: dict[int, bytes] = {}
    total = 0
    for ud in parts:
        head = concat_header(ud)
        if head is None:
            raise PduError("a part of a concatenated message lacks its header")
        _ref, total, seq = head
        pieces[seq] = ud[header_size(ud) :]
    if sorted(pieces) != list(range(1, total + 1)):
        raise PduError(f"parts {sorted(pieces)} of {total}: incomplete")
    return b"".join(pieces[i] for i in range(1, total + 1))


class Reassembly:
    """What an SMS gateway hands over, one SMS at a time, into whole messages: parts keyed
    by (sender, reference, count), so two senders' colliding references never mix; a part
    that arrives twice is kept once. A sender may have `per_sender` messages waiting for
    parts (its oldest gives way: a phone spraying one part per reference crowds out only
    itself), all senders `max_open`, each at most `ttl_s`."""

    def __init__(self, *, per_sender: int = 16, max_open: int = 4096, ttl_s: float = 3600.0) -> None:
        self.per_sender = per_sender
        self.max_open = max_open
        self.ttl_s = ttl_s
        self._open: OrderedDict[tuple[str, int, int], tuple[float, dict[int, bytes]]] = OrderedDict()
        self.duplicates = 0
        self.dropped = 0

    def feed(self, sender: str, ud: bytes, now: float | None = None) -> bytes | None:
        """One SMS's user data from `sender`; the whole message when this completes one."""
        now = time.monotonic() if now is None else now
        head = concat_header(ud)
        if head is None:
            return ud
        ref, total, seq = head
        key = (sender, ref, total)
        self._expire(now)
        at, pieces = self._open.get(key, (now, {}))
        if seq in pieces:
            self.duplicates += 1
            return None
        pieces[seq] = ud[header_size(ud) :]
        if len(pieces) == total:
            self._open.pop(key, None)
            return b"".join(pieces[i] for i in range(1, total + 1))
        self._open[key] = (at, pieces)
        mine = [k for k in self._open if k[0] == sender]
        for old in mine[: max(0, len(mine) - self.per_sender)]:
            del self._open[old]
            self.dropped += 1
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
            self.dropped += 1
        return None

    def _expire(self, now: float) -> None:
        while self._open:
            key, (at, _p) = next(iter(self._open.items()))
            if now - at < self.ttl_s:
                return
            del self._open[key]
            self.dropped += 1

    @property
    def waiting(self) -> int:
        return len(self._open)


def decode_text(dcs: int, ud: bytes, udl: int) -> str:
    """The text one SMS shows (its concatenation header, and the fill after it, skipped)."""
    head = header_size(ud) if concat_header(ud) is not None else 0
    if dcs == DCS_UCS2:
        return ud[head:].decode("utf-16-be", "replace")
    if dcs == DCS_GSM7:
        fill = (7 - (head * 8) % 7) % 7 if head else 0
        skip = (head * 8 + fill) // 7
        return gsm7.decode(gsm7.unpack(ud[head:], udl - skip, skip_bits=fill))
    return ud[head:].hex()
